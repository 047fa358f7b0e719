"""The mutation tests run only when asked for (`-m mutants`): each one restarts services and
runs a whole drill, minutes in all, so a plain `pytest tests/` keeps to the fast catalogue test."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "mutants" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="mutation tests run with -m mutants (CI's own step)")
    for item in items:
        if item.get_closest_marker("mutants"):
            item.add_marker(skip)
