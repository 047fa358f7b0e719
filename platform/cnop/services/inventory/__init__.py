"""inventory: the asset catalogue and its prices (public, read-only)."""
