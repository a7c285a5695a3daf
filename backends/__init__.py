"""Backend drivers that need code beyond the generic fsspec driver (installed as mirror.backends)."""
