"""A realistic RunResult for report tests and the sample screenshot: a breaker drill with two
charts, a failed check with a hint, and an error."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from grader.model import Chart, CheckResult, Phase, RunResult, SeriesPoint

T0 = datetime(2025, 3, 14, 9, 30, 0, tzinfo=UTC)


def sample_result() -> RunResult:
    drill = Phase(name="drill", start=T0, end=T0 + timedelta(seconds=90))
    baseline = Phase(name="baseline", start=T0, end=T0 + timedelta(seconds=20))
    fault = Phase(name="fault", start=T0 + timedelta(seconds=20), end=T0 + timedelta(seconds=50))
    recovery = Phase(
        name="recovery", start=T0 + timedelta(seconds=50), end=T0 + timedelta(seconds=90)
    )
    e0 = T0.timestamp()

    def state(t: int) -> float:
        return 1.0 if 23 <= t < 33 else 2.0 if 33 <= t < 35 else 1.0 if 35 <= t < 45 else 0.0

    breaker = Chart(
        title="Circuit breaker state (gateway → order)",
        unit="0 closed · 1 open · 2 half-open",
        series={"order": [SeriesPoint(t=e0 + t, v=state(t)) for t in range(-5, 95)]},
        shaded=["fault"],
    )
    ok = [
        SeriesPoint(t=e0 + t, v=48 + 4 * math.sin(t / 5) - (40 if 20 <= t < 50 else 0))
        for t in range(-5, 95)
    ]
    err = [
        SeriesPoint(t=e0 + t, v=(30 if 20 <= t < 23 else 6 if 23 <= t < 50 else 0.2))
        for t in range(-5, 95)
    ]
    rej = [SeriesPoint(t=e0 + t, v=(34 if 23 <= t < 45 else 0)) for t in range(-5, 95) if t < 60]
    rates = Chart(
        title="Gateway responses by status",
        unit="requests/s",
        series={"2xx": ok, "5xx from upstream": err, "503 breaker open": rej},
        shaded=["fault", "recovery"],
    )
    checks = [
        CheckResult(
            id="breaker-opens",
            title="The breaker opens while the order service fails",
            kind="promql",
            passed=True,
            points=3,
            max_points=3,
            required=True,
            guards="breaker",
            hint="Is CNOP_BREAKER_ENABLED true?",
            evidence={
                "query": 'max(cnop_circuit_breaker_state{upstream="order"})',
                "mode": "range",
                "reduce": "max",
                "window": {
                    "phase": "fault",
                    "start": fault.start.isoformat(),
                    "end": fault.end.isoformat(),
                    "duration_s": 30,
                },
                "observed": 2,
                "op": ">=",
                "expected": 1,
                "comparison": "2 >= 1: holds",
            },
        ),
        CheckResult(
            id="fast-fail",
            title="Open breaker answers in under 10 ms",
            kind="traffic",
            passed=False,
            points=0,
            max_points=2,
            required=True,
            guards="breaker",
            hint="An open breaker must answer 503 without calling the upstream. Look at the "
            "gateway's breaker settings: is the open state actually short-circuiting?",
            evidence={
                "generator": "browse",
                "responses": 880,
                "by_status": {"200": 610, "503": 270},
                "observed": 412.5,
                "op": "<=",
                "expected": 10,
                "comparison": "412.5 <= 10: does not hold",
                "example": "<script>alert('x')</script> & ]]> \x01 bell",
            },
        ),
        CheckResult(
            id="ledger",
            title="Ledger equals balance for the trader",
            kind="invariant",
            passed=True,
            points=2,
            max_points=2,
            required=True,
            evidence={
                "ledger_sum": "55.30",
                "balance": "55.30",
                "comparison": "ledger 55.30 == balance 55.30: holds",
            },
        ),
        CheckResult(
            id="logs-state",
            title="The breaker logs its state changes",
            kind="logs",
            passed=False,
            points=0,
            max_points=1,
            required=False,
            hint="Log circuit_state_changed on every transition.",
            error="the run has no log source, so log checks cannot be evaluated",
        ),
    ]
    return RunResult(
        scenario="breaker-order-outage",
        title="Order service outage: the breaker protects the gateway",
        description="The order service fails half of its requests for 30 s. The gateway's "
        "circuit breaker should open, answer fast, and close again after recovery.",
        seed=4242,
        params={"error_rate": 0.5, "fault_seconds": 30},
        runtime="local",
        started_at=T0 - timedelta(seconds=8),
        finished_at=T0 + timedelta(seconds=101),
        duration_s=109.0,
        phases=[drill, baseline, fault, recovery],
        steady_state={"before": {"ok": True, "p99_ms": 41}, "after": {"ok": True, "p99_ms": 44}},
        checks=checks,
        charts=[breaker, rates],
        score=5,
        max_score=8,
        passed=False,
        errors=["rollback: fault flag cnop:fault:order:error_rate had already expired"],
    )
