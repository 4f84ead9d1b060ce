"""Cocoon Platform: a paid, metered gateway to the COCOON network."""

__version__ = "0.1.0"
