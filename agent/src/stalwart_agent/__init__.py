"""Stalwart agent: finds a machine's GPUs, registers with the master and runs trials on them."""

__version__ = "0.1.0"
