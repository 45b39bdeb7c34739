"""The project's error types.

One pattern for every message about bad input, so scripts and people read them alike:
``FILE: field `labels` must be ..., got ...``.
"""

from __future__ import annotations


class DynacorError(Exception):
    """Base class of every error dynacor raises on purpose."""


class InputError(DynacorError, ValueError):
    """Bad input: names the file, the field, what was expected and what was found."""

    def __init__(self, file: str | None, field: str | None, expected: str, got: object = None):
        self.file = str(file) if file is not None else None
        self.field = field
        self.expected = expected
        self.got = got
        where = f"{self.file}: " if self.file else ""
        what = f"field `{field}` " if field else ""
        tail = "" if got is None else f", got {got}"
        super().__init__(f"{where}{what}must be {expected}{tail}")


class RunExistsError(DynacorError):
    """The output directory already holds a finished (or running) run."""


class MissingError(DynacorError, FileNotFoundError):
    """A file that should exist does not."""


class CorruptError(DynacorError, ValueError):
    """A file exists but cannot be read as what it should be."""


class Cancelled(DynacorError):
    """The run was cancelled by its caller."""
