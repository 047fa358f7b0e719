"""PromQL checks and the Prometheus client against a real Prometheus scraping every second."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import pytest

from grader.charts import chart_from_query
from grader.evaluate import evaluate, evaluate_all
from grader.model import Phase, PromQLCheck, RunContext
from grader.prometheus import Prometheus, PrometheusError
from tests.grader.conftest import PromServer


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def timeline(prometheus: PromServer) -> RunContext:
    """3 s quiet, 4 s "fault" (state 1, /a +10/s, /b +1/s), 3 s "recovery" (state 0)."""
    exporter = prometheus.exporter
    with Prometheus(prometheus.url) as prom:
        assert prom.wait_for_scrape_after(time.time(), timeout=20), "no first scrape"
        exporter.gauge.set(0)
        exporter.requests.labels(route="/a").inc(0)
        exporter.requests.labels(route="/b").inc(0)
        drill_start = _now()
        time.sleep(3)
        # A phase ends only once Prometheus has scraped its last change (the zeros the fault's
        # increase counts from, the fault's last increment): 1 s scrapes normally have, but a
        # loaded machine can delay or drop a scrape and leave a phase without the samples the
        # checks count. The drill's own end needs no wait: the checks wait for it.
        assert prom.wait_for_scrape_after(drill_start, timeout=20), "no scrape of the zeros"
        fault_start = _now()
        exporter.gauge.set(1)
        for _ in range(4):
            exporter.requests.labels(route="/a").inc(10)
            exporter.requests.labels(route="/b").inc(1)
            incremented = time.time()
            time.sleep(1)
        assert prom.wait_for_scrape_after(incremented, timeout=20), "no scrape of the fault"
        fault_end = _now()
        exporter.gauge.set(0)
        time.sleep(3)
        drill_end = _now()
    return RunContext(
        prometheus_url=prometheus.url,
        gateway_url="http://127.0.0.1:9",
        phases={
            "drill": Phase(name="drill", start=drill_start, end=drill_end),
            "fault": Phase(name="fault", start=fault_start, end=fault_end),
            "recovery": Phase(name="recovery", start=fault_end, end=drill_end),
        },
        params={"route": "/a", "threshold": 30},
    )


def check(**fields) -> PromQLCheck:
    return PromQLCheck(id=fields.pop("id", "c1"), title="a check", **fields)


def test_instant_increase_over_the_phase_passes_and_fails(timeline: RunContext) -> None:
    query = 'sum(increase(lab_test_requests_total{route="{route}"}[{window}]))'
    ok = evaluate(check(query=query, window="fault", op=">=", value=30, points=3), timeline)
    assert ok.passed, ok
    assert ok.points == 3 and ok.max_points == 3
    ev = ok.evidence
    assert ev["query"].startswith('sum(increase(lab_test_requests_total{route="/a"}[')
    fault = timeline.phases["fault"]
    fault_s = (fault.end - fault.start).total_seconds()  # 4 s, more if a scrape was late
    # The phase + 2 s margin, rounded up.
    assert ev["window"]["promql_window"] == f"{math.ceil(fault_s) + 2}s"
    assert 30 <= ev["observed"] <= 60
    assert ev["mode"] == "instant" and ev["samples"]
    assert "holds" in ev["comparison"]

    bad = evaluate(check(query=query, window="fault", op=">=", value=100, points=3), timeline)
    assert not bad.passed and bad.points == 0 and bad.error is None
    assert "does not hold" in bad.evidence["comparison"]


def test_instant_reduce_over_series(timeline: RunContext) -> None:
    query = "increase(lab_test_requests_total[{window}])"
    summed = evaluate(check(query=query, window="fault", op=">", value=40), timeline)
    assert summed.passed, summed.evidence  # /a and /b together exceed /a alone
    counted = evaluate(
        check(query=query, window="fault", reduce="count", op="==", value=2), timeline
    )
    assert counted.passed, counted.evidence
    smallest = evaluate(
        check(query=query, window="fault", reduce="min", op="<", value=10), timeline
    )
    assert smallest.passed, smallest.evidence  # /b got about 4


def test_range_checks_pass_and_fail(timeline: RunContext) -> None:
    peak = evaluate(
        check(query="lab_test_state", mode="range", window="fault", reduce="max", op="==", value=1),
        timeline,
    )
    assert peak.passed, peak.evidence
    assert peak.evidence["samples_total"] >= 4 and peak.evidence["step_s"] == 1
    never_opened = evaluate(
        check(query="lab_test_state", mode="range", window="fault", reduce="max", op="==", value=0),
        timeline,
    )
    assert not never_opened.passed
    ended_closed = evaluate(
        check(
            query="lab_test_state", mode="range", window="recovery", reduce="last", op="==", value=0
        ),
        timeline,
    )
    assert ended_closed.passed, ended_closed.evidence
    open_seconds = evaluate(
        check(
            query="lab_test_state == 1",
            mode="range",
            window="drill",
            reduce="count",
            op=">=",
            value=3,
        ),
        timeline,
    )
    assert open_seconds.passed, open_seconds.evidence
    # About the fault's seconds (4, more if a scrape was late), not the drill's 10.
    fault = timeline.phases["fault"]
    assert open_seconds.evidence["observed"] <= (fault.end - fault.start).total_seconds() + 3


def test_evidence_is_bounded(timeline: RunContext) -> None:
    result = evaluate(
        check(query="lab_test_requests_total", mode="range", window="drill", op=">", value=0),
        timeline,
    )
    shown = sum(len(s["points"]) for s in result.evidence["samples"])
    assert result.evidence["samples_total"] > 0
    assert shown <= 50


def test_no_data_fails_for_max_and_counts_zero_for_sum(timeline: RunContext) -> None:
    missing = evaluate(
        check(query="lab_test_missing", window="fault", reduce="max", op=">=", value=0), timeline
    )
    assert not missing.passed and missing.error is None
    assert missing.evidence["observed"] is None
    assert missing.evidence["comparison"].startswith("no data")
    zero = evaluate(check(query="lab_test_missing", window="fault", op="==", value=0), timeline)
    assert zero.passed


def test_errors_become_failed_checks(timeline: RunContext) -> None:
    results = evaluate_all(
        [
            check(id="syntax", query="sum(", op=">=", value=0),
            check(id="placeholder", query="x[{nope}]", op=">=", value=0),
            check(id="phase", query="up", window="nope", op=">=", value=0),
        ],
        timeline,
    )
    assert [r.passed for r in results] == [False, False, False]
    syntax, placeholder, phase = results
    assert "rejected" in syntax.error and "sum(" in syntax.error
    assert "{nope}" in placeholder.error
    assert "no phase 'nope'" in phase.error
    down = timeline.model_copy(update={"prometheus_url": "http://127.0.0.1:9"})
    unreachable = evaluate(check(query="up", op=">=", value=0), down)
    assert not unreachable.passed and "cannot reach Prometheus" in unreachable.error


def test_client_queries_and_waits(prometheus: PromServer) -> None:
    with Prometheus(prometheus.url) as prom:
        before = time.time()
        assert prom.wait_for_scrape_after(before, timeout=5)
        assert prom.oldest_last_scrape() >= before
        assert not prom.wait_for_scrape_after(time.time() + 3600, timeout=0.5)
        scalar = prom.query("1 + 1")
        assert scalar[0].v == 2 and scalar[0].labels == {}
        series = prom.query_range("up", time.time() - 5, time.time(), step=1)
        assert series and series[0].labels["job"] == "grader-test"
        with pytest.raises(PrometheusError, match="instant vector"):
            prom.query("up[10s]")


def test_chart_from_query(prometheus: PromServer, timeline: RunContext) -> None:
    # The padding after the drill holds what is scraped by the time the chart is made: let it
    # reach a step past the drill's end, however long the tests before this one took.
    time.sleep(max(0.0, timeline.phases["drill"].end.timestamp() + 1.5 - time.time()))
    with Prometheus(prometheus.url) as prom:
        chart = chart_from_query(
            prom,
            "Requests",
            "rate(lab_test_requests_total[2s])",
            timeline.phases,
            "route",
            unit="requests/s",
        )
        assert set(chart.series) == {"/a", "/b"}
        assert chart.shaded == ["fault", "recovery"] and chart.unit == "requests/s"
        drill = timeline.phases["drill"]
        points = chart.series["/a"]
        # The range reaches past the drill on both ends (the series began just before it).
        # rate() over 2 s needs two scrapes: allow one more scrape interval of slack under load.
        assert points[0].t <= drill.start.timestamp() + 4
        assert points[-1].t > drill.end.timestamp()
        assert max(p.v for p in points) > 5
        templated = chart_from_query(
            prom, "State", "lab_test_state", timeline.phases, "{job}: state", shaded=["fault"]
        )
        assert list(templated.series) == ["grader-test: state"]
        assert max(p.v for p in templated.series["grader-test: state"]) == 1
        missing = chart_from_query(prom, "Nothing", "lab_test_missing", timeline.phases)
        assert missing.series == {}
    with Prometheus("http://127.0.0.1:9") as down:
        assert chart_from_query(down, "Down", "up", timeline.phases).series == {}


class _Recording:
    """Prometheus as a chart sees it: what it was asked to wait for, and which range."""

    def __init__(self) -> None:
        self.waited: list[float] = []
        self.ranges: list[tuple[float, float, float]] = []  # (start, end, asked at)

    def wait_for_scrape_after(self, moment: datetime | float, timeout: float = 10.0) -> bool:
        self.waited.append(moment if isinstance(moment, float) else moment.timestamp())
        return True

    def query_range(self, query: str, start: float, end: float, step: float = 1.0) -> list:
        self.ranges.append((start, end, time.time()))
        return []


def _drill(start: float, end: float) -> Phase:
    at = datetime.fromtimestamp
    return Phase(name="drill", start=at(start, UTC), end=at(end, UTC))


def test_a_chart_made_as_the_drill_ends_does_not_wait_for_its_padding() -> None:
    """The padding after the drill shows what is scraped by then: waiting for five more
    seconds of scrapes made every drill five seconds longer."""
    began, ended = _now().timestamp() - 20, _now().timestamp()
    phases = [_drill(began, ended)]
    prom = _Recording()
    chart_from_query(prom, "Requests", "up", phases)  # type: ignore[arg-type]
    assert prom.waited == [pytest.approx(ended)]
    [(start, end, asked)] = prom.ranges
    assert start == pytest.approx(began - 5) and ended <= end <= asked
    old = [_drill(began - 60, began)]
    chart_from_query(prom, "Requests", "up", old)  # type: ignore[arg-type]
    assert prom.ranges[-1][1] == pytest.approx(began + 5)  # long over: the whole padding
