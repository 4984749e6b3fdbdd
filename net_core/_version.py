"""The version of the ``net-core`` distribution (single source of truth)."""

__version__ = "0.1.0"
