"""mirror: keep targets (any fsspec filesystem) identical to a local source folder, one way."""

__version__ = "0.1.0"
