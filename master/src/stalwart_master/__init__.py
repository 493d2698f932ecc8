"""Stalwart master: the REST API, the database and the background jobs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stalwart-master")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"
