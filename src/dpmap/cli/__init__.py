"""The ``dpmap`` command line (Typer)."""

from dpmap.cli.app import app, main

__all__ = ["app", "main"]
