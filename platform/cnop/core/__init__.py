"""The common core every service shares; services import nothing from each other."""
