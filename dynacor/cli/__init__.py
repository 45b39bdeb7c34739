"""The ``dynacor`` command line (entry point `main`)."""

from dynacor.cli.main import main

__all__ = ["main"]
