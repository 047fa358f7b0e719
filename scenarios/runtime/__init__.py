"""Runtimes: the one interface scenarios use to start, stop and hurt the platform."""
