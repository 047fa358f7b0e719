"""Traffic checks on synthetic observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from grader.checks.traffic import nearest_rank
from grader.evaluate import evaluate
from grader.model import Observation, Phase, RunContext, TrafficCheck

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
E0 = T0.timestamp()


def obs(t: float, status: int, latency_ms: float = 20) -> Observation:
    said = {"Retry-After": str(1 + int(t) % 3)} if status == 503 else {}
    return Observation(
        generator="web", t=E0 + t, status=status, latency_s=latency_ms / 1000, headers=said
    )


def traffic() -> list[Observation]:
    """10 req/s: 0-10 s healthy, 10-20 s fault (503 from 12 s on, one 500), 20-30 s recovery
    (errors until 23 s, then healthy)."""
    out = []
    for i in range(300):
        t = i / 10
        status = 503 if 12 <= t < 23 else 200
        if t == 11.0:
            status = 500
        latency = 5 if status == 503 else 20 + (i % 100)  # 20..119 ms
        out.append(obs(t, status, latency))
    # Out-of-order delivery must not matter.
    return list(reversed(out))


def ctx(observations: list[Observation] | None = None) -> RunContext:
    return RunContext(
        prometheus_url="http://127.0.0.1:9",
        gateway_url="http://127.0.0.1:9",
        phases={
            "drill": Phase(name="drill", start=T0, end=T0 + timedelta(seconds=30)),
            "fault": Phase(
                name="fault", start=T0 + timedelta(seconds=10), end=T0 + timedelta(seconds=20)
            ),
            "baseline": Phase(name="baseline", start=T0, end=T0 + timedelta(seconds=10)),
        },
        traffic={"web": traffic() if observations is None else observations},
    )


def check(**fields: Any) -> TrafficCheck:
    return TrafficCheck(id="traffic-check", title="a traffic check", generator="web", **fields)


def test_nearest_rank() -> None:
    assert nearest_rank(list(range(1, 101)), 99) == 99
    assert nearest_rank([5.0], 99) == 5.0
    assert nearest_rank([1, 2, 3], 99) == 3
    assert nearest_rank([], 99) is None


def test_share_and_count_of_statuses() -> None:
    share = evaluate(
        check(metric="share_status", statuses=[503], window="fault", op=">=", value=0.75), ctx()
    )
    assert share.passed, share.evidence
    assert share.evidence["observed"] == pytest.approx(0.8, abs=0.02)
    assert share.evidence["by_status"]["503"] == share.evidence["matching"]
    strict = evaluate(
        check(metric="share_status", statuses=[503], window="fault", op=">=", value=0.9), ctx()
    )
    assert not strict.passed
    count = evaluate(
        check(metric="count_status", statuses=[500], window="fault", op="==", value=1), ctx()
    )
    assert count.passed, count.evidence


def test_availability_and_max_5xx() -> None:
    baseline = evaluate(
        check(metric="availability", window="baseline", op=">=", value=0.999), ctx()
    )
    assert baseline.passed, baseline.evidence
    during = evaluate(check(metric="availability", window="fault", op=">=", value=0.99), ctx())
    assert not during.passed
    transport_errors = ctx([obs(1, 0), obs(2, 200)])
    half = evaluate(
        check(metric="availability", window="baseline", op=">=", value=0.9), transport_errors
    )
    assert not half.passed and half.evidence["observed"] == 0.5
    fives = evaluate(check(metric="max_5xx", window="fault", op="<=", value=0), ctx())
    assert not fives.passed and fives.evidence["observed"] > 70
    clean = evaluate(check(metric="max_5xx", window="baseline", op="<=", value=0), ctx())
    assert clean.passed


def test_p99_latency() -> None:
    # Baseline latencies are 20..119 ms, 100 samples: nearest-rank p99 is 118 ms.
    p99 = evaluate(check(metric="p99_latency_ms", window="baseline", op="<=", value=150), ctx())
    assert p99.passed and p99.evidence["observed"] == pytest.approx(118)
    tight = evaluate(check(metric="p99_latency_ms", window="baseline", op="<=", value=100), ctx())
    assert not tight.passed
    fast_fail = evaluate(
        check(metric="p99_latency_ms", statuses=[503], window="fault", op="<=", value=10), ctx()
    )
    # 12.0 s .. 20.0 s inclusive: a phase includes both of its ends.
    assert fast_fail.passed and fast_fail.evidence["measured"] == 81


def test_time_to_detect() -> None:
    ttd = evaluate(
        check(metric="time_to_detect_s", statuses=[503], window="fault", op="<=", value=3), ctx()
    )
    assert ttd.passed, ttd.evidence
    assert ttd.evidence["observed"] == pytest.approx(2.005, abs=0.01)  # sent at 12 s + 5 ms
    slow = evaluate(
        check(metric="time_to_detect_s", statuses=[503], window="fault", op="<=", value=1), ctx()
    )
    assert not slow.passed
    never = evaluate(
        check(metric="time_to_detect_s", statuses=[429], window="fault", op="<=", value=30), ctx()
    )
    assert not never.passed and never.evidence["observed"] is None


def test_time_to_recover() -> None:
    ttr = evaluate(check(metric="time_to_recover_s", window="fault", op="<=", value=5), ctx())
    assert ttr.passed, ttr.evidence
    assert ttr.evidence["observed"] == pytest.approx(3.0 + 0.02, abs=0.15)
    slow = evaluate(check(metric="time_to_recover_s", window="fault", op="<=", value=2), ctx())
    assert not slow.passed
    # Two successes in a row are not a recovery.
    flapping = [obs(20 + i, 200 if i % 3 else 503) for i in range(12)]
    never = evaluate(
        check(metric="time_to_recover_s", window="fault", op="<=", value=60), ctx(flapping)
    )
    assert not never.passed and never.evidence["recovered_with"] is None


def test_unknown_generator_and_empty_window() -> None:
    result = evaluate(
        TrafficCheck(id="x1", title="t", generator="nope", metric="max_5xx", op="<=", value=0),
        ctx(),
    )
    assert not result.passed and "nope" in result.error and "web" in result.error
    empty = evaluate(check(metric="share_status", statuses=[200], op=">=", value=0), ctx([]))
    assert not empty.passed and empty.evidence["responses"] == 0


def test_max_retry_after_reads_the_longest_wait_a_refusal_announced() -> None:
    """A block's length shows in what its refusals say: 403s at 298, 297 and one short
    reservation refusal at 12 read 298; a refusal without the header is counted apart."""
    said = [(1, 403, "12"), (2, 403, "298"), (3, 403, "297"), (4, 403, None), (5, 401, "900")]
    observations = [
        Observation(
            generator="web",
            t=E0 + t,
            status=status,
            latency_s=0.01,
            headers={} if value is None else {"Retry-After": value},
        )
        for t, status, value in said
    ]
    lasts = check(metric="max_retry_after_s", statuses=[403], op=">=", value=280)
    result = evaluate(lasts, ctx(observations))
    assert result.passed
    assert result.evidence["observed"] == 298
    assert result.evidence["without_retry_after"] == 1
    shortened = evaluate(lasts, ctx([o for o in observations if o.t < E0 + 2]))
    assert not shortened.passed and shortened.evidence["observed"] == 12
    assert not evaluate(lasts, ctx([])).passed  # no refusal at all proves nothing
