"""insights: an LLM summary of the caller's portfolio, with a cache and an offline fallback."""
