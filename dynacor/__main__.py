"""``python -m dynacor`` is the same as the ``dynacor`` command."""

from dynacor.cli.main import entry

entry()
