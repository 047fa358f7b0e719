"""The six services; each has ``main.py`` with ``Settings`` and ``create_app``."""
