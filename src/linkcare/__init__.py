"""linkcare: link pseudonymised health and social care extracts, and stratify risk."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("linkcare")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
