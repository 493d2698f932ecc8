"""Stalwart harness: what training code imports (Core API), the Python SDK and the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stalwart")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"
