"""The ``stalwart`` (alias ``stw``) command line: one module per noun, all over ``stalwart.client``."""
