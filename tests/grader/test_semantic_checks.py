"""Checks that compare a measured behaviour with the platform's configured number.

The configured value comes from ``cnop_setting`` (here a stand-in Prometheus); the behaviour
from logs (breaker transitions, upstream calls per request) and traffic (the limiter's
envelope, a breaker replayed through the contract's rules).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from grader.checks.breaker_model import BreakerRules, replay_breaker
from grader.checks.common import CheckEnv, compare
from grader.evaluate import evaluate_with, reevaluate
from grader.model import (
    CheckResult,
    CheckSpec,
    LogsCheck,
    Observation,
    Phase,
    RunContext,
    TrafficCheck,
)
from grader.prometheus import Sample
from tests.grader.test_logs import FakeLogs

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


class FakeSettings:
    """Prometheus answering ``max(cnop_setting{service=..., name=...})`` from a dict."""

    def __init__(self, settings: dict[str, float]) -> None:
        self.settings = settings
        self.asked: list[str] = []

    def query(self, promql: str, at: Any = None) -> list[Sample]:
        self.asked.append(promql)
        found = re.search(r'service="(\w+)",name="(\w+)"', promql)
        assert found, promql
        value = self.settings.get(f"{found.group(1)}.{found.group(2)}")
        return [] if value is None else [Sample(labels={}, t=0.0, v=value)]

    def close(self) -> None:
        return None


GATEWAY = {
    "gateway.breaker_consecutive_failures": 5,
    "gateway.breaker_open_seconds": 10,
    "gateway.breaker_half_open_calls": 3,
    "gateway.breaker_failure_rate": 0.5,
    "gateway.breaker_window": 20,
    "gateway.breaker_min_calls": 10,
    "gateway.upstream_retries": 2,
    "gateway.rate_limit_ip_limit": 40,
    "gateway.rate_limit_window_seconds": 60,
}


def grade(
    spec: CheckSpec,
    logs: dict[str, list[Any]] | None = None,
    traffic: dict[str, list[Observation]] | None = None,
    settings: dict[str, float] | None = None,
) -> CheckResult:
    ctx = RunContext(
        prometheus_url="http://127.0.0.1:9",
        gateway_url="http://127.0.0.1:9",
        phases={"drill": Phase(name="drill", start=T0, end=T0 + timedelta(seconds=60))},
        traffic=traffic or {},
        logs=FakeLogs(logs or {}),
    )
    env = CheckEnv(ctx=ctx, _prom=FakeSettings(GATEWAY if settings is None else settings))  # type: ignore[arg-type]
    return evaluate_with(spec, env)


def logs_check(**fields: Any) -> LogsCheck:
    return LogsCheck(id="semantic", title="a semantic check", **fields)


def breaker_event(seconds: float, old: str, new: str, upstream: str = "inventory") -> dict:
    return {
        "timestamp": at(seconds),
        "event": "circuit_state_changed",
        "upstream": upstream,
        "from_state": old,
        "to_state": new,
    }


def failure(seconds: float) -> dict:
    return {"timestamp": at(seconds), "event": "upstream_error", "upstream": "inventory"}


# --- tolerance -------------------------------------------------------------------------------


def test_tolerance_widens_the_strict_side_of_each_comparison() -> None:
    assert compare(10.4, "==", 10, 0.5) and not compare(10.6, "==", 10, 0.5)
    assert compare(9.6, "==", 10, 0.5)
    assert compare(41, "<=", 40, 1) and not compare(42, "<=", 40, 1)
    assert compare(39, ">=", 40, 1) and not compare(38, ">=", 40, 1)
    assert not compare(None, "==", 0, 5)


# --- breaker numbers from the gateway's log ----------------------------------------------------


def test_failures_counted_up_to_the_opening_match_the_configured_threshold() -> None:
    spec = logs_check(
        service="gateway",
        match={"event": "upstream_error", "upstream": "inventory"},
        until={"event": "circuit_state_changed", "upstream": "inventory", "to_state": "open"},
        op="==",
        setting="gateway.breaker_consecutive_failures",
    )
    five = [failure(1 + i / 10) for i in range(5)]
    # The fifth failure and the opening share a timestamp: the log's order decides.
    opened = {**breaker_event(1.4, "closed", "open")}
    later = [failure(2)]  # a straggler after the opening does not count
    result = grade(spec, {"gateway": [*five, opened, *later]})
    assert result.passed, result.evidence
    assert result.evidence["expected_from"] == "gateway.breaker_consecutive_failures = 5"
    twenty = [failure(1 + i / 100) for i in range(20)]
    lax = grade(spec, {"gateway": [*twenty, breaker_event(1.3, "closed", "open")]})
    assert not lax.passed and lax.evidence["observed"] == 20


def test_a_missing_bound_fails_the_check_with_a_reason() -> None:
    spec = logs_check(
        service="gateway",
        match={"event": "upstream_error"},
        until={"event": "circuit_state_changed", "to_state": "open"},
        op="==",
        setting="gateway.breaker_consecutive_failures",
    )
    result = grade(spec, {"gateway": [failure(1 + i) for i in range(30)]})
    assert not result.passed and "until" in (result.error or "")


def test_open_time_is_the_interval_from_opening_to_half_open() -> None:
    spec = logs_check(
        service="gateway",
        match={"event": "circuit_state_changed"},
        measure="interval_s",
        after={"event": "circuit_state_changed", "to_state": "open"},
        until={"event": "circuit_state_changed", "to_state": "half-open"},
        op="==",
        setting="gateway.breaker_open_seconds",
        setting_offset=0.5,
        tolerance=0.55,
    )
    honest = grade(
        spec,
        {"gateway": [breaker_event(2, "closed", "open"), breaker_event(12.2, "open", "half-open")]},
    )
    assert honest.passed, honest.evidence
    assert honest.evidence["expected_from"] == "gateway.breaker_open_seconds = 10 + 0.5"
    short = grade(
        spec,
        {"gateway": [breaker_event(2, "closed", "open"), breaker_event(7.1, "open", "half-open")]},
    )
    assert not short.passed and short.evidence["observed"] == pytest.approx(5.1)
    # With no override the configured value decides: an operator who set 5 s gets 5 s.
    assert grade(
        spec,
        short_logs := {"gateway": short_events()},
        settings={**GATEWAY, "gateway.breaker_open_seconds": 5},
    ).passed, short_logs


def short_events() -> list[dict]:
    return [breaker_event(2, "closed", "open"), breaker_event(7.1, "open", "half-open")]


def request(seconds: float, duration_ms: float, request_id: str = "x", status: int = 200) -> dict:
    return {
        "timestamp": at(seconds),
        "event": "request",
        "path": "/assets",
        "status": status,
        "duration_ms": duration_ms,
        "request_id": request_id,
    }


def test_half_open_trials_are_the_upstream_requests_started_between_half_open_and_closed() -> None:
    spec = logs_check(
        service="inventory",
        match={"event": "request"},
        bounds_service="gateway",
        after={"event": "circuit_state_changed", "to_state": "half-open"},
        until={"event": "circuit_state_changed", "from_state": "half-open", "to_state": "closed"},
        timed_by="start",
        op="==",
        setting="gateway.breaker_half_open_calls",
    )
    gateway = [
        breaker_event(2, "closed", "open"),
        breaker_event(12, "open", "half-open"),
        breaker_event(12.62, "half-open", "closed"),
    ]
    inventory = [
        request(11.0, 5),  # before: not a trial
        request(12.01, 5),
        request(12.31, 5),
        request(12.625, 10),  # the third trial, logged just after the gateway closed
        request(12.9, 5),  # closed again: ordinary traffic
    ]
    result = grade(spec, {"gateway": gateway, "inventory": inventory})
    assert result.passed, result.evidence
    one_trial = grade(
        spec,
        {
            "gateway": [*gateway[:2], breaker_event(12.02, "half-open", "closed")],
            "inventory": inventory,
        },
    )
    assert not one_trial.passed and one_trial.evidence["observed"] == 1


def half_open_budget_check() -> LogsCheck:
    return logs_check(
        service="inventory",
        match={"event": "request"},
        measure="most_between",
        timed_by="start",
        bounds_service="gateway",
        after={"event": "circuit_state_changed", "to_state": "half-open"},
        until={"event": "circuit_state_changed", "from_state": "half-open"},
        op="<=",
        setting="gateway.breaker_half_open_calls",
    )


def slow_rounds(trials_started: list[float]) -> dict[str, list[dict]]:
    """A quick round that reopens at its first trial, then a slow one (1.5 s per trial) whose
    trials start at ``trials_started`` and that closes when the third has answered."""
    gateway = [
        breaker_event(2, "closed", "open"),
        breaker_event(12, "open", "half-open"),
        breaker_event(12.01, "half-open", "open"),
        breaker_event(30, "open", "half-open"),
        breaker_event(32.02, "half-open", "closed"),
    ]
    inventory = [
        request(12.005, 3),  # the failed trial of the first round
        *(request(start + 1.5, 1500) for start in trials_started),
        request(32.3, 5),  # closed again: ordinary traffic
        request(32.55, 5),
        request(32.8, 5),
        request(33.05, 5),
    ]
    return {"gateway": gateway, "inventory": inventory}


def test_no_half_open_round_lets_more_than_the_trial_budget_reach_the_upstream() -> None:
    spec = half_open_budget_check()
    result = grade(spec, slow_rounds([30.005, 30.25, 30.5]))
    assert result.passed, result.evidence
    assert [s["count"] for s in result.evidence["stretches"]] == [1, 3]
    assert result.evidence["expected_from"] == "gateway.breaker_half_open_calls = 3"
    # A breaker that lets two more calls through while the slow trials are in flight: the
    # round still closes after three good answers, but five requests reached inventory.
    greedy = grade(spec, slow_rounds([30.005, 30.25, 30.5, 30.75, 31.0]))
    assert not greedy.passed and greedy.evidence["observed"] == 5
    again = reevaluate(spec, greedy.raw)
    assert not again.passed and again.evidence["observed"] == 5, again.error


def test_a_round_still_half_open_at_the_end_counts_up_to_the_window_end() -> None:
    spec = half_open_budget_check()
    logs = slow_rounds([30.005, 30.25, 30.5, 30.75])
    logs["gateway"] = logs["gateway"][:4]  # never closed within the window
    result = grade(spec, logs)
    assert not result.passed and result.evidence["observed"] == 8
    assert result.evidence["stretches"][-1]["until"] is None
    no_round = grade(spec, {"gateway": [], "inventory": logs["inventory"]})
    assert not no_round.passed and "after" in (no_round.error or "")


# --- retries: the upstream's own count of each client request ----------------------------------


def answered(t: float, status: int, request_id: str, latency: float = 0.1) -> Observation:
    return Observation(
        generator="history",
        t=(T0 + timedelta(seconds=t)).timestamp(),
        status=status,
        latency_s=latency,
        headers={"x-request-id": request_id},
    )


def test_every_timed_out_get_reached_the_upstream_once_plus_the_configured_retries() -> None:
    spec = logs_check(
        service="order",
        match={"event": "request"},
        measure="per_request",
        generator="history",
        statuses=[504],
        op="==",
        setting="gateway.upstream_retries",
        setting_offset=1,
    )
    traffic = {
        "history": [answered(1, 504, "a", 9.2), answered(2, 503, "b"), answered(3, 200, "c")]
    }
    logs = {"order": [request(4 + i, 4000, "a") for i in range(3)] + [request(5, 10, "b")]}
    result = grade(spec, logs, traffic)
    assert result.passed, result.evidence
    assert result.evidence["requests_by_count"] == {"3": 1}
    once_more = {"order": [*logs["order"], request(9, 4000, "a")]}
    assert not grade(spec, once_more, traffic).passed
    nothing_timed_out = {"history": [answered(3, 200, "c")]}
    assert not grade(spec, logs, nothing_timed_out).passed  # no 504: nothing proven


def test_a_per_request_check_grades_the_same_from_its_stored_evidence() -> None:
    spec = logs_check(
        service="order",
        match={"event": "request"},
        measure="per_request",
        generator="history",
        statuses=[504],
        op="==",
        setting="gateway.upstream_retries",
        setting_offset=1,
    )
    traffic = {"history": [answered(1, 504, "a", 9.2)]}
    live = grade(spec, {"order": [request(4 + i, 4000, "a") for i in range(3)]}, traffic)
    again = reevaluate(spec, live.raw)
    assert live.passed and again.passed, (live.evidence, again.error)
    assert again.evidence["expected_from"] == live.evidence["expected_from"]


# --- the limiter's envelope ---------------------------------------------------------------------


def flood(admitted: int, limited: int, seconds: float) -> list[Observation]:
    total = admitted + limited
    return [
        Observation(
            generator="stuffing",
            t=(T0 + timedelta(seconds=1 + seconds * i / (total - 1))).timestamp(),
            status=401 if i < admitted else 429,
            latency_s=0.01,
        )
        for i in range(total)
    ]


def test_admitted_requests_match_the_gcra_envelope_of_the_configured_limit() -> None:
    spec = TrafficCheck(
        id="envelope",
        title="the limiter admits what it promises",
        generator="stuffing",
        metric="admitted_over_envelope",
        uses={
            "limit": "gateway.rate_limit_ip_limit",
            "window": "gateway.rate_limit_window_seconds",
        },
        op="==",
        value=0,
        tolerance=1,
    )
    # 40 at once, then 40/60 per second over 3 s: 42.
    exact = grade(spec, traffic={"stuffing": flood(42, 18, 3)})
    assert exact.passed, exact.evidence
    assert exact.evidence["admitted"] == 42
    generous = grade(spec, traffic={"stuffing": flood(45, 15, 3)})
    assert not generous.passed and generous.evidence["observed"] > 1
    stingy = grade(spec, traffic={"stuffing": flood(38, 22, 3)})
    assert not stingy.passed and stingy.evidence["observed"] < -1  # refused too early
    # A client slower than the limit is never refused, and owes the envelope nothing.
    assert grade(spec, traffic={"stuffing": flood(30, 0, 3)}).passed
    early = grade(spec, traffic={"stuffing": flood(10, 5, 3)})
    assert not early.passed


def test_idle_time_is_not_banked_beyond_the_bucket() -> None:
    """A client that sent slowly has a full bucket (40), no more: refused after 40 is
    right, and so is 40 at once after a slow start."""
    spec = TrafficCheck(
        id="envelope",
        title="the limiter admits what it promises",
        generator="stuffing",
        metric="admitted_over_envelope",
        uses={
            "limit": "gateway.rate_limit_ip_limit",
            "window": "gateway.rate_limit_window_seconds",
        },
        op="==",
        value=0,
        tolerance=1,
    )
    slow = [answered_at(i * 5.0, 401) for i in range(6)]  # one every 5 s: never limited
    burst = [answered_at(30 + i * 0.01, 401 if i < 40 else 429) for i in range(50)]
    result = grade(spec, traffic={"stuffing": slow + burst})
    assert result.passed, result.evidence
    banked = [answered_at(30 + i * 0.01, 401 if i < 45 else 429) for i in range(50)]
    assert not grade(spec, traffic={"stuffing": slow + banked}).passed


def answered_at(seconds: float, status: int) -> Observation:
    return Observation(
        generator="stuffing",
        t=(T0 + timedelta(seconds=1 + seconds)).timestamp(),
        status=status,
        latency_s=0.01,
    )


# --- a breaker replayed through the contract's rules ----------------------------------------------

RULES = BreakerRules(
    failure_rate=0.5,
    window=20,
    min_calls=10,
    consecutive_failures=5,
    half_open_calls=3,
    open_seconds=1,  # run_breaker's default: four refused calls 0.25 s apart
)
FAILURES = {500}


def even(rate: float, n: int, start: int = 0) -> list[bool]:
    """The fault flag's even spread: call k fails when floor(k x rate) steps up."""
    return [int((k + 1) * rate + 1e-9) > int(k * rate + 1e-9) for k in range(start, start + n)]


def run_breaker(
    outcomes: list[bool], rules: BreakerRules, open_calls: int = 4
) -> list[tuple[float, float, int]]:
    """What a client sees from a breaker with ``rules`` over upstream outcomes (True = failed);
    an open breaker refuses the next ``open_calls`` calls (its open time), then trials."""
    calls = []
    state, consecutive, refused, trials, ok = "closed", 0, 0, 0, 0
    window: list[bool] = [False] * int(rules.window)
    feed = iter(outcomes)
    t = 0.0
    while True:
        t += 0.25
        if state == "open":
            if refused < open_calls:
                refused += 1
                calls.append((t, 0.01, 503))
                continue
            state, trials, ok = "half-open", 0, 0
        failed = next(feed, None)
        if failed is None:
            return calls
        calls.append((t, 0.01, 500 if failed else 200))
        if state == "half-open":
            trials += 1
            if failed:
                state, refused = "open", 0
            else:
                ok += 1
                if ok >= rules.half_open_calls:
                    state, window, consecutive = "closed", [], 0
            continue
        window = [*window, failed][-int(rules.window) :]
        consecutive = consecutive + 1 if failed else 0
        if consecutive >= rules.consecutive_failures or (
            len(window) >= rules.min_calls
            and window.count(True) / len(window) >= rules.failure_rate
        ):
            state, refused = "open", 0


def test_an_honest_breaker_replays_without_a_mismatch() -> None:
    outcomes = even(0.3, 30) + even(0.6, 40)
    replay = replay_breaker(run_breaker(outcomes, RULES), RULES, FAILURES)
    assert replay.mismatches == [], replay.mismatches
    assert replay.openings == 1 and replay.reopenings >= 1


def test_a_breaker_without_its_failure_rate_rule_is_caught() -> None:
    outcomes = even(0.3, 30) + even(0.6, 40)
    rate_off = BreakerRules(1.1, 20, 10, 5, 3, 1)  # the rule can never fire
    replay = replay_breaker(run_breaker(outcomes, rate_off), RULES, FAILURES)
    assert replay.mismatches and replay.mismatches[0]["expected"].startswith("503")


@pytest.mark.parametrize(
    "wrong",
    [
        BreakerRules(0.4, 20, 10, 5, 3, 1),  # opens at a lower share
        BreakerRules(0.5, 10, 10, 5, 3, 1),  # a shorter window
        BreakerRules(0.5, 20, 10, 5, 1, 1),  # closes after one good trial
    ],
)
def test_a_breaker_with_another_number_is_caught(wrong: BreakerRules) -> None:
    outcomes = even(0.3, 30) + even(0.6, 40) + [False] * 3 + even(0.6, 10)
    replay = replay_breaker(run_breaker(outcomes, wrong), RULES, FAILURES)
    assert replay.mismatches, wrong


def test_a_share_below_the_rule_never_opens_it() -> None:
    replay = replay_breaker(run_breaker(even(0.3, 60), RULES), RULES, FAILURES)
    assert replay.openings == 0 and replay.mismatches == []


def test_a_breaker_that_stays_open_too_briefly_is_caught() -> None:
    outcomes = even(0.3, 30) + even(0.6, 40)
    replay = replay_breaker(run_breaker(outcomes, RULES, open_calls=1), RULES, FAILURES)
    assert replay.mismatches and replay.mismatches[0]["expected"].startswith("503")
