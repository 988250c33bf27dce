"""The package's version, in a module of its own: anything may import it without importing the package's lazy
__init__ (which reaches the API, so a module below the API importing `from tiesmerge import __version__` closed a
circle)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tiesmerge")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0+src"
