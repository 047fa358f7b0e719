"""CNOP trading platform: six FastAPI services sharing one small core (``cnop.core``)."""
