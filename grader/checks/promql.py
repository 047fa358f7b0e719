"""PromQL checks: one query over a phase, reduced to a number and compared.

``instant`` evaluates once at the phase end (so ``increase(x[{window}])`` covers the phase);
``range`` evaluates every second over the phase and reduces over every sample of every series.
"""

from __future__ import annotations

import math
import re
from typing import Any

from grader.checks.common import (
    MAX_EVIDENCE_VALUES,
    CheckEnv,
    CheckError,
    compare,
    comparison_evidence,
    phase_of,
    plain,
    window_evidence,
)
from grader.model import PromQLCheck
from grader.prometheus import Sample, Series, series_name, to_epoch

# Added to a phase's length for {window}, so the range reaches the scrape just before the
# phase started (scrapes are 1 s apart).
WINDOW_MARGIN_S = 2

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def window_seconds(duration_s: float) -> int:
    return max(1, math.ceil(duration_s)) + WINDOW_MARGIN_S


def render_query(query: str, window: str, params: dict[str, Any]) -> str:
    """Fill ``{window}`` and ``{param}`` placeholders, leaving PromQL's own braces alone
    (a label matcher always contains an operator, so it never looks like ``{name}``)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "window":
            return window
        if name in params:
            return str(params[name])
        known = ", ".join(sorted(params)) or "none"
        raise CheckError(f"the query uses {{{name}}}, which is not a parameter (params: {known})")

    return _PLACEHOLDER.sub(fill, query)


def reduce_values(values: list[float], how: str) -> float | None:
    if how == "count":
        return float(len(values))
    if how == "sum":
        return float(sum(values))
    if not values:
        return None
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    raise CheckError(f"unknown reduce {how!r}")


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def _instant(spec: PromQLCheck, env: CheckEnv, query: str, end: float) -> tuple[float | None, dict]:
    samples: list[Sample] = env.prom.query(query, at=end)
    samples.sort(key=lambda s: series_name(s.labels))
    values = _finite([s.v for s in samples])
    # Every instant sample is already "the last value" of its series, so last sums them.
    how = "sum" if spec.reduce == "last" else spec.reduce
    observed = reduce_values(values, how)
    evidence = {
        "series": len(samples),
        "samples": [
            {"series": series_name(s.labels), "value": plain(s.v)}
            for s in samples[:MAX_EVIDENCE_VALUES]
        ],
    }
    if len(values) < len(samples):
        evidence["nan_dropped"] = len(samples) - len(values)
    return observed, evidence


def _thin(points: list[tuple[float, float]], keep: int) -> list[tuple[float, float]]:
    """Evenly spaced points including the last, at most ``keep``."""
    if len(points) <= keep:
        return points
    if keep <= 1:
        return points[-1:]
    step = (len(points) - 1) / (keep - 1)
    return [points[round(i * step)] for i in range(keep)]


def _range(
    spec: PromQLCheck, env: CheckEnv, query: str, start: float, end: float
) -> tuple[float | None, dict]:
    series: list[Series] = env.prom.query_range(query, start, end, step=1.0)
    series.sort(key=lambda s: series_name(s.labels))
    if spec.reduce == "last":
        # The value each series ended the phase with, summed over series.
        values = _finite([s.points[-1][1] for s in series if s.points])
        observed = reduce_values(values, "sum") if values else None
    else:
        values = _finite([v for s in series for _, v in s.points])
        observed = reduce_values(values, spec.reduce)
    total = sum(len(s.points) for s in series)
    budget = max(1, MAX_EVIDENCE_VALUES // max(1, len(series)))
    shown = []
    for s in series[:MAX_EVIDENCE_VALUES]:
        shown.append(
            {
                "series": series_name(s.labels),
                # [seconds since the phase started, value]
                "points": [[round(t - start, 1), plain(v)] for t, v in _thin(s.points, budget)],
            }
        )
    evidence = {
        "step_s": 1,
        "series": len(series),
        "samples_total": total,
        "samples": shown,
        "samples_truncated": total > sum(len(s["points"]) for s in shown),
    }
    if len(values) < total and spec.reduce != "last":
        evidence["nan_dropped"] = total - len(values)
    return observed, evidence


def evaluate(spec: PromQLCheck, env: CheckEnv) -> tuple[bool, dict[str, Any]]:
    phase = phase_of(env.ctx, spec.window)
    start, end = to_epoch(phase.start), to_epoch(phase.end)
    window = f"{window_seconds(end - start)}s"
    query = render_query(spec.query, window, env.ctx.params)
    fresh = env.prom.wait_for_scrape_after(end)
    if spec.mode == "instant":
        observed, detail = _instant(spec, env, query, end)
    else:
        observed, detail = _range(spec, env, query, start, end)
    passed = compare(observed, spec.op, spec.value, spec.tolerance)
    evidence: dict[str, Any] = {
        "query": query,
        "mode": spec.mode,
        "reduce": spec.reduce,
        "window": {**window_evidence(phase), "promql_window": window},
        **detail,
        **comparison_evidence(observed, spec.op, spec.value, passed, spec.tolerance),
    }
    if spec.mode == "instant":
        evidence["evaluated_at"] = phase.end.isoformat()
    if not fresh:
        evidence["warning"] = "no scrape after the phase end arrived in time; data may lag"
    return passed, evidence
