"""What the platform gives a drill to measure its numbers by: the failures that open a breaker
come before its opening in the log, and an even error rate is exactly that share."""

from __future__ import annotations

import logging

import pytest
from cnop.core.breaker import BreakerPolicy, CircuitBreaker
from cnop.core.faults import FaultMiddleware
from cnop.core.problems import ProblemError
from cnop.services.gateway.upstreams import RetryPolicy, Upstream

from tests.conftest import free_port


async def test_the_failures_that_open_a_breaker_are_logged_before_the_opening(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A drill counts upstream_error events up to circuit_state_changed: the one that tipped
    the breaker over must be among them, or it counts one short of the threshold."""
    breaker = CircuitBreaker("logorder", BreakerPolicy(consecutive_failures=3))
    dead = Upstream(
        "logorder",
        f"http://127.0.0.1:{free_port()}",  # nothing listens: connect refused
        breaker,
        timeout=1.0,
        retry=RetryPolicy(retries=0),
    )
    try:
        with caplog.at_level(logging.INFO, logger="cnop"):
            for _ in range(3):
                with pytest.raises(ProblemError):
                    await dead.send("GET", "/x")
    finally:
        await dead.aclose()
    order = [
        getattr(r, "event", None)
        for r in caplog.records
        if getattr(r, "event", None) in ("upstream_error", "circuit_state_changed")
    ]
    assert order == ["upstream_error"] * 3 + ["circuit_state_changed"]


@pytest.mark.parametrize(("rate", "longest_run"), [(0.3, 1), (0.5, 1), (0.6, 2), (0.9, 9)])
def test_an_even_error_rate_fails_exactly_that_share_in_short_runs(
    rate: float, longest_run: int
) -> None:
    middleware = FaultMiddleware(app=None, flags=None)  # type: ignore[arg-type]
    flag = {"rate": rate, "status": 500, "spread": "even"}
    outcomes = [middleware._injects_error(flag) for _ in range(100)]
    assert sum(outcomes) == round(rate * 100)
    for start in range(0, 81, 20):  # every 20 calls hold the share, to the call
        assert sum(outcomes[start : start + 20]) == round(rate * 20)
    runs, run = [], 0
    for failed in outcomes:
        run = run + 1 if failed else 0
        runs.append(run)
    assert max(runs) == longest_run
