"""Stalwart agent: finds a machine's GPUs, registers with the master and runs trials on them."""
