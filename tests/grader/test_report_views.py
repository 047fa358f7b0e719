"""What the report shows beyond the checks (issues 9 and 12), rendered from real runs.

``tests/grader/real_runs/*/result.json`` are the result folders of real `lab run`s on the local
runtime (lock-holder-pause and upstream-outage, seed 1): the timeline across services, the
traffic summary, every phase shaded, state names on the breaker chart, links from PromQL
evidence to Prometheus's graph page, and the scenario's `teaches:` text at the top.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from grader import svg
from grader.model import Chart, Observation, Phase, RunResult, SeriesPoint
from grader.report import load_result, prometheus_graph_url, render_run
from grader.timeline import build_timeline
from scenarios.schema import available, load_scenario

RUNS = Path(__file__).parent / "real_runs"
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(params=["lock-holder-pause", "upstream-outage"])
def real_run(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[RunResult, Path]:
    """A real run's folder, rendered again with this code (`lab report RUN_DIR`)."""
    folder = tmp_path / request.param
    folder.mkdir()
    shutil.copy(RUNS / request.param / "result.json", folder / "result.json")
    result = load_result(folder)
    render_run(result, folder)
    return result, folder


def _html(folder: Path) -> str:
    return (folder / "report.html").read_text(encoding="utf-8")


def _md(folder: Path) -> str:
    return (folder / "report.md").read_text(encoding="utf-8")


def _svgs(html: str) -> list[str]:
    return re.findall(r"<svg class=\"chart[^\"]*\".*?</svg>", html, re.S)


# --- the timeline ---------------------------------------------------------------------------


def test_lab5_timeline_follows_the_buy_through_three_services() -> None:
    """Lab 5 asks to follow one request through gateway, order and inventory: the buy's log
    lines in each service join on its request id, with what the buyer itself saw."""
    result = load_result(RUNS / "lock-holder-pause")
    timeline = result.timeline
    assert timeline is not None
    buy = next(n for n, label in timeline.traces.items() if label.startswith("POST /api/v1/orders"))
    assert timeline.traces[buy] == "POST /api/v1/orders → 422"
    lanes = {e.service for e in timeline.events if e.trace == buy}
    assert {"client", "gateway", "order", "inventory"} <= lanes
    named = {e.event for e in timeline.events if e.trace == buy and e.service == "order"}
    assert {"order_rejected", "lock_lost"} <= named
    withdraw = next(n for n, label in timeline.traces.items() if "withdraw" in label)
    assert {e.service for e in timeline.events if e.trace == withdraw} >= {"gateway", "user"}
    # The order service's request spans the pause: it began before and ended after.
    paused = next(p for p in result.phases if p.name == "paused")
    order = next(
        e
        for e in timeline.events
        if e.trace == buy and e.service == "order" and e.event == "request"
    )
    assert order.t - (order.duration_s or 0) < paused.start.timestamp()
    assert order.t > paused.end.timestamp()


def test_the_timeline_starts_with_the_drill(real_run: tuple[RunResult, Path]) -> None:
    """Setup's logins and the steady-state probes before the method are not the drill's story."""
    result, _ = real_run
    assert result.timeline is not None
    start = next(p for p in result.phases if p.name == "drill").start.timestamp()
    for e in result.timeline.events:
        assert e.t - (e.duration_s or 0) >= start - 0.01, e


def test_report_draws_a_swimlane_per_service_with_every_phase_shaded(
    real_run: tuple[RunResult, Path],
) -> None:
    result, folder = real_run
    html = _html(folder)
    timeline = next(s for s in _svgs(html) if 'class="chart timeline"' in s)
    assert result.timeline is not None
    for lane in svg.lanes_of(result.timeline):
        assert f'font-weight="600">{lane}</text>' in timeline, lane
    for phase in result.phases:
        if phase.name != "drill":
            assert f"<title>phase {phase.name}</title>" in timeline, phase.name
    assert timeline.count('class="span"') == sum(
        1 for e in result.timeline.events if e.duration_s is not None
    )
    assert 'class="join"' in timeline  # one request drawn across lanes
    assert 'id="timeline"' in html


def test_report_md_lists_the_timeline_as_a_table(real_run: tuple[RunResult, Path]) -> None:
    result, folder = real_run
    md = _md(folder)
    assert "## Timeline across services" in md
    assert result.timeline is not None
    for number, label in result.timeline.traces.items():
        assert f"| #{number} | {label} |" in md
    if result.scenario == "lock-holder-pause":
        assert re.search(r"\| \+\d+\.\d\d \| order \| order_rejected reason=insufficient_funds", md)
        assert re.search(r"\| \+\d+\.\d\d \| order \| lock_lost", md)
        assert "| client | gets 422: buy |" in md


def test_a_busy_drill_draws_one_trace_of_each_kind_and_counts_the_rest() -> None:
    result = load_result(RUNS / "upstream-outage")
    timeline = result.timeline
    assert timeline is not None
    assert timeline.traces_total > len(timeline.traces) == 24
    labels = set(timeline.traces.values())
    # Each answer the clients got is drawn at least once: success, the breaker's refusal.
    assert "GET /api/v1/inventory/assets → 200" in labels
    assert "GET /api/v1/inventory/assets → 503" in labels
    assert "GET /api/v1/balance → 200" in labels
    counted = timeline.counts["gateway"]["request"]
    assert counted >= timeline.traces_total - 5  # every request counted, drawn or not
    names = {e.event for e in timeline.events if e.service == "gateway"}
    assert "circuit_state_changed" in names


def _log(service: str, t: float, event: str, rid: str | None = None, **fields: object) -> dict:
    stamp = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return {"timestamp": stamp, "service": service, "event": event, "request_id": rid, **fields}


def test_build_timeline_keeps_every_kind_and_drops_prose_and_other_times() -> None:
    t0 = T0.timestamp()
    logs = {
        "gateway": [
            _log(
                "gateway",
                t0 + 1 + i * 0.1,
                "request",
                f"r{i}",
                method="GET",
                path="/a",
                status=200 if i % 10 else 503,
                duration_ms=5,
            )
            for i in range(100)
        ]
        + [
            _log("gateway", t0 + 2, "Started server process [12]"),  # uvicorn's prose
            _log("gateway", t0 - 30, "circuit_state_changed", to_state="open"),  # before
            _log("gateway", t0 + 3, "circuit_state_changed", upstream="x", to_state="open"),
        ],
    }
    observations = {
        "browse": [
            Observation(
                generator="browse",
                t=t0 + 1,
                status=200,
                latency_s=0.01,
                route="a",
                headers={"X-Request-ID": "r0"},
            )
        ],
        "browse.assets": [
            Observation(
                generator="browse.assets",
                t=t0 + 1,
                status=200,
                latency_s=0.01,
                route="a",
                headers={"X-Request-ID": "r0"},
            )
        ],
    }
    timeline = build_timeline(logs, observations, T0, T0 + timedelta(seconds=20), max_traces=5)
    assert len(timeline.traces) == 5 and timeline.traces_total == 100
    assert sorted(set(timeline.traces.values())) == ["GET /a → 200", "GET /a → 503"]
    assert timeline.counts["gateway"] == {"request": 100, "circuit_state_changed": 1}
    assert timeline.counts["client"] == {"response": 1}  # recorded twice, one request
    events = {e.event for e in timeline.events}
    assert "Started server process [12]" not in events
    marks = [e for e in timeline.events if e.event == "circuit_state_changed"]
    assert len(marks) == 1 and marks[0].detail == "upstream=x to_state=open"


# --- charts ---------------------------------------------------------------------------------


def test_every_chart_shades_every_phase_of_the_drill(real_run: tuple[RunResult, Path]) -> None:
    result, folder = real_run
    wanted = [p.name for p in result.phases if p.name != "drill"]
    assert result.charts
    for chart in result.charts:
        assert chart.shaded == wanted, chart.title
    for drawn in _svgs(_html(folder)):
        for name in wanted:
            assert f"<title>phase {name}</title>" in drawn


def test_lock_holder_pause_has_charts() -> None:
    result = load_result(RUNS / "lock-holder-pause")
    titles = [c.title for c in result.charts]
    assert any("scrapes" in t for t in titles) and any("Orders by result" in t for t in titles)
    up = next(c for c in result.charts if "scrapes" in c.title)
    # The frozen order service misses scrapes: `up` drops to 0 during the pause.
    assert min(p.v for p in up.series["order"]) == 0
    assert min(p.v for p in up.series["user"]) == 1


def test_the_breaker_chart_names_its_states() -> None:
    result = load_result(RUNS / "upstream-outage")
    chart = next(c for c in result.charts if "breaker" in c.title.lower())
    assert chart.value_names == {"0": "closed", "1": "open", "2": "half-open"}
    drawn = svg.line_chart(chart, result.phases, result.phases[0].start.timestamp())
    for name in ("closed", "open", "half-open"):
        assert f">{name}</text>" in drawn


def test_report_md_names_the_states_in_a_state_chart(tmp_path: Path) -> None:
    render_run(load_result(RUNS / "upstream-outage"), tmp_path)
    md = _md(tmp_path)
    assert "| Inventory breaker state | 0 (closed) | 2 (half-open) | 2 (half-open) |" in md


def test_overlapping_phase_names_go_on_separate_rows() -> None:
    """upstream-outage's `fault` (2-9 s) and `fast-fail` (5-9 s) overlap; their names must not."""
    phases = [
        Phase(name="drill", start=T0, end=T0 + timedelta(seconds=30)),
        Phase(name="fault", start=T0 + timedelta(seconds=2), end=T0 + timedelta(seconds=9)),
        Phase(name="fast-fail", start=T0 + timedelta(seconds=5), end=T0 + timedelta(seconds=9)),
    ]
    chart = Chart(
        title="c",
        series={"x": [SeriesPoint(t=T0.timestamp() + s, v=1) for s in range(30)]},
        shaded=["fault", "fast-fail"],
    )
    drawn = svg.line_chart(chart, phases, T0.timestamp())
    rows = {
        name: float(y)
        for y, name in re.findall(
            r'<text x="[\d.]+" y="([\d.]+)" text-anchor="middle" '
            r'fill="#5b4a00" font-weight="600">([a-z-]+)</text>',
            drawn,
        )
    }
    assert set(rows) == {"fault", "fast-fail"} and rows["fault"] != rows["fast-fail"]


# --- the rest of the page -------------------------------------------------------------------


def test_traffic_summary_per_generator(real_run: tuple[RunResult, Path]) -> None:
    result, folder = real_run
    md, html = _md(folder), _html(folder)
    assert "## Traffic" in md and 'id="traffic"' in html
    for name, summary in result.traffic.items():
        if not isinstance(summary, dict) or "requests" not in summary:
            continue
        if name.endswith(".no_retry_after") and not summary["requests"]:
            assert f"`{name}`" not in md
            continue
        assert re.search(rf"\| `{re.escape(name)}` \| {summary['requests']} \|", md), name
    if result.scenario == "lock-holder-pause":
        assert re.search(r"\| `buy` \| 1 \| 422: 1 \| 100.0 % \| \d\.\d\d s \|", md)
        assert "| buy.quantity |" in md  # what the price drift paragraph of lab 5 points at


def test_promql_evidence_links_to_prometheus_graph(real_run: tuple[RunResult, Path]) -> None:
    result, folder = real_run
    assert result.prometheus_url.startswith("http://127.0.0.1:")
    html, md = _html(folder), _md(folder)
    links = [unescape(h) for h in re.findall(r'<a class="graph" href="([^"]+)"', html)]
    promql = [c for c in result.checks if c.kind == "promql"]
    assert len(links) == len(promql) >= 1
    for check, link in zip(promql, links, strict=True):
        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}" == result.prometheus_url
        assert parts.path == "/graph"
        query = parse_qs(parts.query)
        assert query["g0.expr"] == [check.evidence["query"]]
        assert query["g0.tab"] == ["0"]
        assert re.fullmatch(r"\d+s", query["g0.range_input"][0])
        end = datetime.strptime(query["g0.end_input"][0], "%Y-%m-%d %H:%M:%S")
        graded_end = datetime.fromisoformat(check.evidence["window"]["end"])
        assert 0 < end.replace(tzinfo=UTC).timestamp() - graded_end.timestamp() <= 16
        assert f"[Open this query in Prometheus]({link})" in md


def test_prometheus_graph_url_covers_the_window_with_a_margin() -> None:
    window = {"start": T0.isoformat(), "end": (T0 + timedelta(seconds=12)).isoformat()}
    url = prometheus_graph_url("http://127.0.0.1:9090/", 'up{job="order"}', window)
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query == {
        "g0.expr": ['up{job="order"}'],
        "g0.tab": ["0"],
        "g0.range_input": ["42s"],
        "g0.end_input": ["2026-01-01 12:00:27"],
    }
    assert url.startswith("http://127.0.0.1:9090/graph?")
    assert prometheus_graph_url("", "up", window) is None
    assert prometheus_graph_url("http://p", "up", {}) is None


def test_teaches_text_comes_first(real_run: tuple[RunResult, Path]) -> None:
    result, folder = real_run
    scenario = load_scenario(available()[result.scenario])
    first = scenario.teaches.split(".")[0]
    md, html = _md(folder), _html(folder)
    assert md.index("## What this drill teaches") < md.index("## Checks")
    assert md.index(first) < md.index("## Checks")
    assert html.index("What this drill teaches") < html.index("<h2>Checks</h2>")


def test_phases_table_counts_from_the_drill_start_and_says_what_each_is(
    real_run: tuple[RunResult, Path],
) -> None:
    result, folder = real_run
    md = _md(folder)
    scenario = load_scenario(available()[result.scenario])
    assert "| drill | 0.0 |" in md
    for name, about in scenario.phases.items():
        assert re.search(
            rf"\| {re.escape(name)} \| \d+\.\d \| \d+\.\d \| [^|]+ \| "
            rf"{re.escape(about)} \|",
            md,
        ), name


def test_event_names_in_a_lane_never_overlap_even_at_the_right_edge() -> None:
    """A name near the right edge goes left of its diamond; packing must know that."""
    from grader.model import Timeline, TimelineEvent

    t0 = T0.timestamp()
    events = [
        TimelineEvent(t=t0 + 8.5, service="order", event="dependency_unavailable"),
        TimelineEvent(t=t0 + 8.7, service="order", event="lock_lost"),
        TimelineEvent(t=t0 + 12.1, service="order", event="service_stopped"),
        TimelineEvent(t=t0 + 9.0, service="order", event="request", duration_s=7.0, status=503),
    ]
    phases = [Phase(name="drill", start=T0, end=T0 + timedelta(seconds=12))]
    drawn = svg.swimlane(Timeline(events=events), phases, t0)
    labels = re.findall(
        r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="(start|end)" fill="#1f2430" '
        r'font-size="11">([a-z_]+)</text>',
        drawn,
    )
    assert len(labels) == 3
    spans = []
    for x, y, anchor, name in labels:
        width = len(name) * svg.CHAR_PX
        x0 = float(x) if anchor == "start" else float(x) - width
        spans.append((float(y), x0, x0 + width))
        assert x0 >= svg.LANE_LEFT and x0 + width <= svg.WIDTH - svg.RIGHT + 1, name
    for i, (y, a0, a1) in enumerate(spans):
        for y2, b0, b1 in spans[i + 1 :]:
            assert y != y2 or a1 <= b0 or b1 <= a0, (spans, labels)
