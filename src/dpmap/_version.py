"""The single source of dpmap's version."""

__version__ = "0.1.0"
