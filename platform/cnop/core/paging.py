"""Page sizes of list endpoints: at most a maximum (422 past it), like any other bound on input.

The bound is checked here rather than by ``Query(le=...)`` so that the no-limits flaw
(``CNOP_PAGE_SIZE_BOUND_ENABLED=false``, security/flaws.yaml) can lift it; the published
OpenAPI document still declares the maximum, and the refusal reads exactly like FastAPI's own
validation error for that bound.
"""

from __future__ import annotations

from typing import Any

from fastapi import Query

from cnop.core.problems import ProblemError
from cnop.core.settings import ServiceSettings

__all__ = ["check_page_size", "page_size"]


def page_size(maximum: int) -> Any:
    """The ``limit`` query parameter: at least 1, at most ``maximum`` (see check_page_size)."""
    return Query(ge=1, json_schema_extra={"maximum": maximum})


def check_page_size(settings: ServiceSettings, limit: int, maximum: int) -> int:
    """``limit``, or the 422 a client gets for a page larger than ``maximum``."""
    if settings.page_size_bound_enabled and limit > maximum:
        raise ProblemError(
            422,
            "Invalid input: limit",
            errors=[
                {"field": "limit", "message": f"Input should be less than or equal to {maximum}"}
            ],
        )
    return limit
