"""auth: validates access tokens and returns the user context (internal only)."""
