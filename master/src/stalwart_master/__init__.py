"""Stalwart master: the REST API, the database and the background jobs."""

__version__ = "0.1.0"
