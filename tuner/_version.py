"""The package version, in a module of its own so that any module can import it without
importing the package (``tuner/__init__.py`` imports :mod:`tuner.apply`, which reads tuned
files)."""

__version__ = "0.1.0"
