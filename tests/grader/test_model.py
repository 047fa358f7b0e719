"""Check specs and run modes: what a grader may count with, and what a run may call itself."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from grader.model import PromQLCheck, effective_mode


def test_a_promql_check_cannot_count_with_offset() -> None:
    """``x - x offset w`` went negative across a restart (evidence "-2 >= 1")."""
    with pytest.raises(ValidationError, match="increase"):
        PromQLCheck(
            id="counted",
            title="t",
            query="sum(cnop_ip_blocks_total) - sum(cnop_ip_blocks_total offset {window})",
            op=">=",
            value=1,
        )
    ok = PromQLCheck(
        id="counted",
        title="t",
        query="sum(increase(cnop_ip_blocks_total[{window}]))",
        op=">=",
        value=1,
    )
    assert "increase" in ok.query


def test_a_run_is_hardened_only_on_shipped_settings() -> None:
    assert effective_mode("hardened", {}) == "hardened"
    service_env = {"gateway": {"CNOP_BREAKER_ENABLED": "false"}}
    assert effective_mode("hardened", service_env) == "custom"


def test_a_weakened_run_is_weakened_only_with_exactly_its_overlay() -> None:
    weaken = {"gateway": {"CNOP_BREAKER_ENABLED": "false"}}
    assert effective_mode("weakened", {"gateway": {"CNOP_BREAKER_ENABLED": "false"}}, weaken) == (
        "weakened"
    )
    more = {"gateway": {"CNOP_BREAKER_ENABLED": "false"}, "order": {"CNOP_LOCKS_ENABLED": "false"}}
    assert effective_mode("weakened", more, weaken) == "custom"
    assert effective_mode("weakened", {}, weaken) == "custom"
