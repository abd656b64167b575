"""The installed package's version, from its metadata ("0+unknown" in a source tree that was
never installed). Its own module so that submodules can name it without importing the
package's ``__init__`` (which imports them)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fakespotter")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"
