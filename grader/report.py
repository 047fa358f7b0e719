"""Graded reports from a :class:`RunResult`: result.json, report.html, report.md and junit.xml.

``result.json`` is the source of truth; every other file can be rendered again from it
(``lab report RUN_DIR``), so a template fix never needs a drill to be rerun.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from grader import svg
from grader.compare import SelftestComparison
from grader.findings import OWASP_API_2023, by_category
from grader.model import Chart, CheckResult, Phase, RunResult, Timeline
from grader.prometheus import to_epoch

RESULT_FILE = "result.json"

# Characters XML 1.0 cannot carry at all (log lines may contain them).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _md_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(text.split())


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("grader", "templates"),
        # HTML is escaped; Markdown is not (its table cells go through the `cell` filter).
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = _md_cell
    return env


def duration_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def evidence_text(evidence: dict[str, Any]) -> str:
    return json.dumps(evidence, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def _origin(result: RunResult) -> float:
    """Time zero of every chart and table: the drill's start, the moment the terminal's
    progress lines and the labs count from too."""
    for phase in result.phases:
        if phase.name == "drill":
            return to_epoch(phase.start)
    starts = [to_epoch(p.start) for p in result.phases]
    return min(starts) if starts else to_epoch(result.started_at)


def _chart_view(chart: Chart, phases: list[Phase], origin: float) -> dict[str, Any]:
    def shown(value: float) -> str:
        text = svg.fmt_number(value)
        name = chart.value_names.get(text)
        return f"{text} ({name})" if name else text

    stats = []
    for name, points in chart.series.items():
        if not points:
            continue
        values = [p.v for p in points]
        stats.append(
            {
                "name": name,
                "min": shown(min(values)),
                "max": shown(max(values)),
                "last": shown(points[-1].v),
                "points": len(points),
            }
        )
    return {
        "title": chart.title,
        "unit": chart.unit,
        "svg": svg.line_chart(chart, phases, origin),
        "legend": svg.legend(chart),
        "stats": stats,
        # Same order and colours as the bands in the SVG.
        "shaded": [
            {"name": p.name, "colour": svg.phase_colour(i)}
            for i, p in enumerate(p for p in phases if p.name in chart.shaded)
        ],
    }


GRAPH_MARGIN_S = 15  # the graph shows a little before and after the graded window


def prometheus_graph_url(base: str, query: str, window: dict[str, Any]) -> str | None:
    """A link to Prometheus's graph page with ``query`` over the graded window (and a margin
    on each side), so a student can look at the series the check read; None without one."""
    if not base or not query:
        return None
    try:
        start = datetime.fromisoformat(str(window["start"]))
        end = datetime.fromisoformat(str(window["end"]))
    except (KeyError, TypeError, ValueError):
        return None
    seconds = max(1, round((end - start).total_seconds())) + 2 * GRAPH_MARGIN_S
    shown_end = datetime.fromtimestamp(end.timestamp() + GRAPH_MARGIN_S, UTC)
    params = {
        "g0.expr": query,
        "g0.tab": "0",  # the graph, not the table
        "g0.range_input": f"{seconds}s",
        "g0.end_input": shown_end.strftime("%Y-%m-%d %H:%M:%S"),  # the UI reads it as UTC
    }
    return f"{base.rstrip('/')}/graph?{urlencode(params)}"


def _check_view(check: CheckResult, prometheus_url: str = "") -> dict[str, Any]:
    comparison = check.evidence.get("comparison") if check.evidence else None
    graph = None
    if check.kind == "promql" and check.evidence:
        window = check.evidence.get("window")
        graph = prometheus_graph_url(
            prometheus_url,
            str(check.evidence.get("query") or ""),
            window if isinstance(window, dict) else {},
        )
    return {
        "id": check.id,
        "title": check.title,
        "kind": check.kind,
        "passed": check.passed,
        "verdict": "PASS" if check.passed else "FAIL",
        "points": check.points,
        "max_points": check.max_points,
        "required": check.required,
        "guards": check.guards,
        "hint": "" if check.passed else check.hint,
        "error": check.error,
        "comparison": comparison if isinstance(comparison, str) else None,
        "evidence": evidence_text(check.evidence) if check.evidence else "",
        "graph": graph,
    }


def _traffic_view(traffic: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One row per traffic generator (statuses, p50/p99, availability), and the numbers the
    generators learned (``stats``). A ``*.no_retry_after`` generator is shown only when it saw
    a refusal without Retry-After."""
    rows = []
    for name, summary in traffic.items():
        if not isinstance(summary, dict) or "requests" not in summary:
            continue
        if name.endswith(".no_retry_after") and not summary.get("requests"):
            continue
        availability = summary.get("availability")
        rows.append(
            {
                "name": name,
                "requests": summary.get("requests", 0),
                "statuses": ", ".join(
                    f"{'no answer' if status == '0' else status}: {count}"
                    for status, count in (summary.get("by_status") or {}).items()
                )
                or "none",
                "availability": "n/a"
                if availability is None
                else f"{float(availability) * 100:.1f} %",
                "p50": _ms(summary.get("p50_ms")),
                "p99": _ms(summary.get("p99_ms")),
            }
        )
    stats = traffic.get("stats")
    learned = (
        {k: json.dumps(v, default=str) if not isinstance(v, str) else v for k, v in stats.items()}
        if isinstance(stats, dict)
        else {}
    )
    return rows, learned


def _ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


MAX_TIMELINE_ROWS = 80  # report.md lists at most this many timeline events


def _timeline_view(
    timeline: Timeline | None, phases: list[Phase], origin: float
) -> dict[str, Any] | None:
    if timeline is None or not timeline.events:
        return None
    rows = []
    for e in sorted(timeline.events, key=lambda e: e.t - (e.duration_s or 0)):
        if e.duration_s is not None:
            when = f"{e.t - e.duration_s - origin:+.2f} → {e.t - origin:+.2f}"
            answer = e.status if e.status else "no answer"
            what = f"{'answers' if e.service != 'client' else 'gets'} {answer}: {e.detail}"
        else:
            when = f"{e.t - origin:+.2f}"
            what = f"{e.event} {e.detail}".strip()
        rows.append(
            {
                "when": when,
                "lane": e.service,
                "what": what,
                "trace": f"#{e.trace}" if e.trace else "",
            }
        )
    lanes = svg.lanes_of(timeline)
    counts = [
        {"lane": lane, "events": ", ".join(f"{k} {v}" for k, v in sorted(events.items()))}
        for lane, events in sorted(
            timeline.counts.items(),
            key=lambda item: (
                lanes.index(item[0]) if item[0] in lanes else len(lanes),
                item[0],
            ),
        )
    ]
    return {
        "svg": svg.swimlane(timeline, phases, origin),
        "traces": [
            {
                "number": n,
                "label": label,
                "request_id": timeline.request_ids.get(n, ""),
                "colour": svg.trace_colour(n),
                "lanes": ", ".join(
                    lane
                    for lane in lanes
                    if any(e.trace == n and e.service == lane for e in timeline.events)
                ),
            }
            for n, label in sorted(timeline.traces.items())
        ],
        "traces_total": timeline.traces_total,
        "rows": rows[:MAX_TIMELINE_ROWS],
        "rows_left_out": max(0, len(rows) - MAX_TIMELINE_ROWS),
        "counts": counts,
        "shaded": [
            {"name": p.name, "colour": svg.phase_colour(i)}
            for i, p in enumerate(p for p in phases if p.name != "drill")
        ],
    }


def _findings_view(result: RunResult) -> list[dict[str, Any]]:
    """A scan's findings grouped by OWASP API Security Top 10 (2023) category, worst first."""
    groups = []
    for key, members in by_category(result.findings).items():
        groups.append(
            {
                "key": key.split(":")[0] if key in OWASP_API_2023 else "Other",
                "name": OWASP_API_2023.get(key, "Weaknesses outside the API Top 10"),
                "gated": sum(1 for f in members if f.gated),
                "findings": [
                    {
                        "id": f.id,
                        "engine": f.engine,
                        "rule": f.rule,
                        "title": f.title,
                        "risk": f.risk,
                        "confidence": f.confidence,
                        "level": f.level,
                        "cwe": f"CWE-{f.cwe}" if f.cwe else "",
                        "where": f.where,
                        "evidence": f.evidence,
                        "fix": f.fix,
                        "flaw": f.flaw or "",
                        "instances": f.instances,
                        "reproduce": f.reproduce,
                    }
                    for f in members
                ],
            }
        )
    return groups


def _view(result: RunResult) -> dict[str, Any]:
    origin = _origin(result)
    phases = [
        {
            "name": p.name,
            "start_s": f"{to_epoch(p.start) - origin:.1f}",
            "end_s": f"{to_epoch(p.end) - origin:.1f}",
            "duration": duration_text(to_epoch(p.end) - to_epoch(p.start)),
            "about": p.about,
        }
        for p in result.phases
    ]
    checks = [_check_view(c, result.prometheus_url) for c in result.checks]
    traffic, learned = _traffic_view(result.traffic)
    failed = [c for c in checks if not c["passed"]]
    return {
        "r": result,
        "verdict": "PASS" if result.passed else "FAIL",
        "started": _when(result.started_at),
        "finished": _when(result.finished_at),
        "duration": duration_text(result.duration_s),
        "phases": phases,
        "checks": checks,
        "failed": failed,
        "passed_count": len(checks) - len(failed),
        "required_failed": [c for c in failed if c["required"]],
        "charts": [_chart_view(c, result.phases, origin) for c in result.charts],
        "timeline": _timeline_view(result.timeline, result.phases, origin),
        "traffic": traffic,
        "learned": learned,
        "teaches": [part.strip() for part in result.teaches.split("\n\n") if part.strip()],
        "finding_groups": _findings_view(result),
        "scan": result.scan,
        "params": {k: json.dumps(v, default=str) for k, v in sorted(result.params.items())},
        "mode": result.mode_label,
        "settings": {
            service: ", ".join(f"{k}={v}" for k, v in env.items())
            for service, env in result.settings.items()
        },
        "steady_state": {
            k: v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
            for k, v in result.steady_state.items()
        },
    }


def junit_xml(result: RunResult) -> str:
    """One testsuite per run, one testcase per check; a failed check is a <failure>."""

    def clean(text: Any) -> str:
        return _XML_ILLEGAL.sub("\ufffd", str(text))

    failures = sum(1 for c in result.checks if not c.passed)
    suite = ET.Element(
        "testsuite",
        {
            "name": clean(result.scenario),
            "tests": str(len(result.checks)),
            "failures": str(failures),
            "errors": "0",
            "skipped": "0",
            "time": f"{result.duration_s:.3f}",
            "timestamp": result.started_at.isoformat(),
        },
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("title", result.title),
        ("seed", result.seed),
        ("runtime", result.runtime),
        ("mode", result.mode_label),
        ("score", f"{result.score}/{result.max_score}"),
        ("verdict", "PASS" if result.passed else "FAIL"),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": clean(value)})
    for check in result.checks:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": clean(f"{result.scenario}.{check.kind}"),
                "name": clean(f"{check.id}: {check.title}"),
                "time": "0",
            },
        )
        if not check.passed:
            message = check.hint or check.error or "check failed"
            body = []
            if check.error:
                body.append(f"error: {check.error}")
            if check.evidence:
                body.append(evidence_text(check.evidence))
            failure = ET.SubElement(
                case,
                "failure",
                {"message": clean(message), "type": "error" if check.error else "check_failed"},
            )
            failure.text = clean("\n".join(body))
    if result.errors:
        err = ET.SubElement(suite, "system-err")
        err.text = clean("\n".join(result.errors))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode")


def _write(path: Path, text: str) -> None:
    # Write then rename, so a reader never sees half a report.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def render_run(result: RunResult, out_dir: Path) -> None:
    """Write result.json, report.html, report.md and junit.xml into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _environment()
    view = _view(result)
    _write(out_dir / RESULT_FILE, result.model_dump_json(indent=2))
    _write(out_dir / "report.html", env.get_template("report.html.j2").render(**view))
    _write(out_dir / "report.md", env.get_template("report.md.j2").render(**view))
    _write(out_dir / "junit.xml", junit_xml(result))


def load_result(path: Path | str) -> RunResult:
    """A RunResult from a run folder or its result.json."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    return RunResult.model_validate_json(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Expectation:
    """What a selftest wanted of one run ("its guarded checks fail") and whether it got it.

    A weakened run is meant to fail, so its own verdict says nothing about the selftest."""

    wanted: str
    met: bool


def render_index(
    results: list[tuple[Path, RunResult]],
    out_dir: Path,
    *,
    expectations: Sequence[Expectation] | None = None,
    comparison: SelftestComparison | None = None,
) -> None:
    """index.html and index.md for a drill of several scenarios; ``results`` pairs each run
    folder with its result, and links are relative so the folder can be moved or archived.

    With ``expectations`` (one per result) the page is a selftest's: its verdict is whether
    every run did what the selftest expected of it, not whether every run passed; with
    ``comparison`` it also shows, check by check, what the weakened run flipped."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if expectations is not None and len(expectations) != len(results):
        raise ValueError("render_index needs one expectation per result")
    rows = []
    for i, (run_dir, result) in enumerate(results):
        expectation = expectations[i] if expectations is not None else None
        link = os.path.relpath(Path(run_dir) / "report.html", out_dir).replace(os.sep, "/")
        rows.append(
            {
                "scenario": result.scenario,
                "title": result.title,
                "verdict": "PASS" if result.passed else "FAIL",
                "passed": result.passed,
                "score": result.score,
                "max_score": result.max_score,
                "duration": duration_text(result.duration_s),
                "mode": result.mode_label,
                "link": link,
                "md_link": os.path.relpath(Path(run_dir) / "report.md", out_dir).replace(
                    os.sep, "/"
                ),
                "wanted": expectation.wanted if expectation else "",
                "met": expectation.met if expectation else result.passed,
            }
        )
    view = {
        "rows": rows,
        "selftest": expectations is not None,
        "passed": sum(1 for r in rows if r["passed"]),
        "met": sum(1 for r in rows if r["met"]),
        "score": sum(r["score"] for r in rows),
        "max_score": sum(r["max_score"] for r in rows),
        "verdict": "PASS" if rows and all(r["met"] for r in rows) else "FAIL",
        "duration": duration_text(sum(r.duration_s for _, r in results)),
        "generated": _when(max((r.finished_at for _, r in results), default=datetime.now())),
        "comparison": comparison.view() if comparison is not None else None,
    }
    env = _environment()
    _write(out_dir / "index.html", env.get_template("index.html.j2").render(**view))
    _write(out_dir / "index.md", env.get_template("index.md.j2").render(**view))
