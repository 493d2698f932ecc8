"""Determined's ``determined.experimental`` import path: ``from stalwart.experimental import client``."""
