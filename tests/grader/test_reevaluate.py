"""Re-grading from a run's stored raw evidence gives the live verdict, for every check kind.

Each test grades live (against a real Prometheus, the stand-in gateway, a log source, traffic
records), then grades again with :func:`grader.evaluate.reevaluate` from ``CheckResult.raw``
alone, after a JSON round trip as in result.json.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI

from grader.evaluate import evaluate, evaluate_all, reevaluate
from grader.model import (
    Account,
    CheckResult,
    InvariantCheck,
    Phase,
    PromQLCheck,
    RunContext,
    TrafficCheck,
)
from grader.prometheus import Prometheus
from tests.grader import test_invariant, test_logs, test_traffic
from tests.grader.conftest import PromServer

gateway = test_invariant.gateway  # the stand-in gateway fixture


def stored(result: CheckResult) -> dict[str, Any]:
    """The raw evidence as a later reader gets it: through result.json."""
    again = CheckResult.model_validate_json(result.model_dump_json())
    assert again.raw is not None
    return again.raw


def same_verdict(live: CheckResult, again: CheckResult) -> None:
    assert again.error is None, again.error
    assert (again.passed, again.points) == (live.passed, live.points)
    assert again.evidence.get("observed") == live.evidence.get("observed")
    assert again.evidence.get("comparison") == live.evidence.get("comparison")


@pytest.fixture(scope="module")
def prom_run(prometheus: PromServer) -> RunContext:
    exporter = prometheus.exporter
    with Prometheus(prometheus.url) as prom:
        assert prom.wait_for_scrape_after(time.time(), timeout=20), "no first scrape"
        exporter.gauge.set(0)
        start = datetime.now(UTC)
        time.sleep(1.5)
        exporter.gauge.set(1)
        exporter.requests.labels(route="/r").inc(7)
        raised = time.time()
        time.sleep(1.5)
        # The live verdicts need a sample of the raised gauge inside the drill: 1.5 s of 1 s
        # scrapes normally hold one, but a loaded machine can delay or drop a scrape.
        assert prom.wait_for_scrape_after(raised, timeout=20), "no scrape of the raised gauge"
        exporter.gauge.set(0)
        end = datetime.now(UTC)
    return RunContext(
        prometheus_url=prometheus.url,
        gateway_url="http://127.0.0.1:9",
        phases={"drill": Phase(name="drill", start=start, end=end)},
        params={"route": "/r"},
    )


@pytest.mark.parametrize(
    ("mode", "reduce", "query", "op", "value"),
    [
        ("range", "max", "lab_test_state", ">=", 1),
        ("range", "max", "lab_test_state", ">=", 2),
        (
            "instant",
            "sum",
            'sum(increase(lab_test_requests_total{route="{route}"}[{window}]))',
            ">",
            0,
        ),
    ],
)
def test_promql_reevaluation_gives_the_live_verdict(
    prom_run: RunContext, mode: str, reduce: str, query: str, op: str, value: float
) -> None:
    spec = PromQLCheck(
        id="p1", title="t", query=query, mode=mode, reduce=reduce, op=op, value=value
    )
    live = evaluate(spec, prom_run)
    assert live.error is None, live.error
    raw = stored(live)
    assert raw["prometheus"][-1]["result"], "the sampled series are stored"
    same_verdict(live, reevaluate(spec, raw))


def test_promql_reevaluation_uses_the_graders_threshold_not_the_runs(
    prom_run: RunContext,
) -> None:
    spec = PromQLCheck(
        id="p1", title="t", query="lab_test_state", mode="range", reduce="max", op=">=", value=1
    )
    live = evaluate(spec, prom_run)
    assert live.passed
    stricter = reevaluate(spec.model_copy(update={"value": 5}), stored(live))
    assert not stricter.passed and stricter.error is None
    other_query = reevaluate(spec.model_copy(update={"query": "up"}), stored(live))
    assert not other_query.passed
    assert "holds no answer" in (other_query.error or "")


@pytest.mark.parametrize(
    "fields",
    [
        {"service": "gateway", "match": {"event": "rate_limited"}, "count": 3},
        {"service": "gateway", "match": {"event": "rate_limited"}, "count": 4},
        {
            "service": "gateway",
            "match": {"event": "circuit_state_changed", "to_state": "open"},
            "before": {"event": "fault_cleared"},
            "before_service": "order",
        },
    ],
)
def test_logs_reevaluation_gives_the_live_verdict(fields: dict[str, Any]) -> None:
    spec = test_logs.check(**fields)
    live = evaluate(spec, test_logs.ctx())
    raw = stored(live)
    kept = [e for read in raw["logs"] for e in read["events"]]
    assert all("timestamp" in e for e in kept), "only events inside the phase are kept"
    same_verdict(live, reevaluate(spec, raw))
    assert reevaluate(spec, raw).evidence.get("ordering") == live.evidence.get("ordering")


@pytest.mark.parametrize(
    ("metric", "statuses", "op", "value"),
    [
        ("availability", [], ">=", 0.5),
        ("p99_latency_ms", [200], "<=", 50),
        ("time_to_detect_s", [503], "<=", 3),
        ("time_to_recover_s", [], "<=", 2),
        ("share_status", [503], ">=", 0.5),
        ("max_retry_after_s", [503], ">=", 1),
    ],
)
def test_traffic_reevaluation_gives_the_live_verdict(
    metric: str, statuses: list[int], op: str, value: float
) -> None:
    spec = TrafficCheck(
        id="t1",
        title="t",
        generator="web",
        metric=metric,
        statuses=statuses,
        window="fault",
        op=op,
        value=value,
    )
    live = evaluate(spec, test_traffic.ctx())
    assert live.error is None, live.error
    raw = stored(live)
    assert list(raw["traffic"]) == ["web"]
    same_verdict(live, reevaluate(spec, raw))


@pytest.mark.parametrize(
    "fields",
    [
        {"account": "alice", "rule": "ledger_equals_balance"},
        {"account": "alice", "rule": "trades_equal_holdings"},
        {"account": "bob", "rule": "balance_non_negative"},
        {"account": "bob", "rule": "holdings_non_negative"},
        {"account": "bob", "rule": "orders_completed", "op": "==", "value": 70},
        {"account": "alice", "rule": "balance_equals", "value": 55.3},
    ],
)
def test_invariant_reevaluation_gives_the_live_verdict(
    gateway: tuple[str, FastAPI], fields: dict[str, Any]
) -> None:
    ctx = RunContext(
        prometheus_url="http://127.0.0.1:9",
        gateway_url=gateway[0],
        phases={},
        accounts={
            name: Account(username=user, password=test_invariant.PASSWORDS[user])
            for name, user in (("alice", "alice_trader"), ("bob", "bob_trader"))
        },
    )
    spec = InvariantCheck(id="i1", title="t", **fields)
    [live] = evaluate_all([spec], ctx)
    assert live.error is None, live.error
    raw = stored(live)
    assert raw["http"], "the API reads are stored"
    assert all("tok-" not in call["body"] for call in raw["http"]), "tokens are redacted"
    same_verdict(live, reevaluate(spec, raw))
    assert reevaluate(spec, raw).evidence.get("comparison") == live.evidence.get("comparison")


def test_a_check_without_raw_evidence_fails_with_a_reason() -> None:
    spec = TrafficCheck(
        id="t1", title="t", generator="web", metric="availability", op=">=", value=0.5
    )
    again = reevaluate(spec, None)
    assert not again.passed
    assert again.error


def test_replaying_a_rate_limited_read_does_not_wait_out_its_retry_after() -> None:
    """Live, the first portfolio read is a 429 with Retry-After: 1 and the check waits; the
    re-grade replays both answers without waiting (a class of 300 is graded in seconds)."""
    from tests.conftest import serve_in_thread

    with serve_in_thread(test_invariant.stand_in(), lifespan="auto") as url:
        ctx = RunContext(
            prometheus_url="http://127.0.0.1:9",
            gateway_url=url,
            phases={},
            accounts={"alice": Account(username="alice_trader", password="Alice-Secret-1")},
        )
        spec = InvariantCheck(id="i1", title="t", account="alice", rule="holdings_non_negative")
        [live] = evaluate_all([spec], ctx)
    raw = stored(live)
    assert [c["status"] for c in raw["http"] if c["path"].endswith("/portfolio")] == [429, 200]
    started = time.monotonic()
    again = reevaluate(spec, raw)
    assert time.monotonic() - started < 0.5
    same_verdict(live, again)
