"""Stalwart harness: what training code imports (Core API), the Python SDK and the CLI."""

__version__ = "0.1.0"
