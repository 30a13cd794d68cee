"""The package version (its own module, so that any layer can read it without importing
the public facade in ``vop/__init__.py``)."""

__version__ = "0.1.0"
