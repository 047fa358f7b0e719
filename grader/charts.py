"""Charts for the report: a key series over the drill, from a Prometheus range query.

A chart never fails a run: when Prometheus is unreachable or the series does not exist, the
chart comes back empty and the report says "no data".
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping

from grader.model import Chart, Phase, SeriesPoint
from grader.prometheus import Prometheus, PrometheusError, to_epoch

_LABEL = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def legend_for(labels: dict[str, str], legend_label: str | None, fallback: str) -> str:
    """``legend_label`` is a label name (``upstream``) or a template (``{from_state}→{to_state}``).
    Without it, a series is named by its labels, or by ``fallback`` when it has none."""
    if legend_label:
        if "{" in legend_label:
            return _LABEL.sub(lambda m: labels.get(m.group(1), "?"), legend_label)
        if legend_label in labels:
            return labels[legend_label]
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    return shown or labels.get("__name__") or fallback


def _phase_list(phases: Mapping[str, Phase] | Iterable[Phase]) -> list[Phase]:
    return list(phases.values()) if isinstance(phases, Mapping) else list(phases)


def chart_from_query(
    prom: Prometheus,
    title: str,
    query: str,
    phases: Mapping[str, Phase] | Iterable[Phase],
    legend_label: str | None = None,
    *,
    unit: str = "",
    shaded: list[str] | None = None,
    step: float = 1.0,
    padding_s: float = 5.0,
    value_names: dict[str, str] | None = None,
) -> Chart:
    """The query over the whole drill (plus a little before and after), fault phases shaded.

    ``shaded`` defaults to every phase but ``drill``.
    """
    listed = _phase_list(phases)
    if shaded is None:
        shaded = [p.name for p in listed if p.name != "drill"]
    chart = Chart(
        title=title, unit=unit, series={}, shaded=shaded, value_names=dict(value_names or {})
    )
    if not listed:
        return chart
    start = min(to_epoch(p.start) for p in listed) - padding_s
    drill_end = max(to_epoch(p.end) for p in listed)
    # After the drill, what Prometheus has by now: the drill's end is scraped (the engine
    # waited for it), and waiting for the whole padding cost every drill 5 s of a chart whose
    # traffic was already over. Never past now: those would be samples carried forward.
    end = min(drill_end + padding_s, max(drill_end, time.time()))
    try:
        prom.wait_for_scrape_after(drill_end, timeout=padding_s + 5)
        result = prom.query_range(query, start, end, step=step)
    except PrometheusError:
        return chart
    series: dict[str, list[SeriesPoint]] = {}
    for s in result:
        points = [SeriesPoint(t=t, v=v) for t, v in s.points if math.isfinite(v)]
        if not points:
            continue
        name = legend_for(s.labels, legend_label, title)
        while name in series:  # two series with the same legend stay apart
            name += "'"
        series[name] = points
    chart.series = series
    return chart
