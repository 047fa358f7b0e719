"""Traffic checks: what a traffic generator's clients saw, the user's view of a drill.

A response belongs to a phase when its request was *sent* within the phase. Detection and
recovery are measured to when the response *arrived* (send time + latency), since that is when a
client could notice.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from grader.checks.breaker_model import BreakerRules, replay_breaker
from grader.checks.common import (
    CheckEnv,
    CheckError,
    compare,
    comparison_evidence,
    phase_of,
    plain,
    read_setting,
    window_evidence,
)
from grader.model import Observation, TrafficCheck
from grader.prometheus import to_epoch

RECOVERY_RUN = 3  # consecutive successes that count as recovered


def nearest_rank(values: list[float], percentile: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least p% of values at or below."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return ordered[rank - 1]


def is_5xx(status: int) -> bool:
    return 500 <= status <= 599


def _ok(status: int) -> bool:
    return 200 <= status <= 299


def evaluate(spec: TrafficCheck, env: CheckEnv) -> tuple[bool, dict[str, Any]]:
    ctx = env.ctx
    if spec.generator not in ctx.traffic:
        known = ", ".join(sorted(ctx.traffic)) or "none"
        raise CheckError(f"no traffic recorded for generator {spec.generator!r} (known: {known})")
    phase = phase_of(ctx, spec.window)
    start, end = to_epoch(phase.start), to_epoch(phase.end)
    everything = sorted(ctx.traffic[spec.generator], key=lambda o: o.t)
    inside = [o for o in everything if start <= o.t <= end]
    wanted = set(spec.statuses)
    by_status = Counter(o.status for o in inside)
    evidence: dict[str, Any] = {
        "generator": spec.generator,
        "metric": spec.metric,
        "statuses": spec.statuses,
        "window": window_evidence(phase),
        "responses": len(inside),
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
    }
    observed: float | None
    metric = spec.metric
    if metric in ("share_status", "count_status"):
        if not wanted:
            raise CheckError(f"{metric} needs `statuses` (which responses to count)")
        hits = sum(1 for o in inside if o.status in wanted)
        evidence["matching"] = hits
        if metric == "count_status":
            observed = float(hits)
        else:
            observed = hits / len(inside) if inside else None
    elif metric == "availability":
        # Transport errors and client timeouts (status 0) are unavailability too.
        good = sum(1 for o in inside if o.status != 0 and not is_5xx(o.status))
        evidence["available"] = good
        observed = good / len(inside) if inside else None
    elif metric == "max_5xx":
        observed = float(sum(1 for o in inside if is_5xx(o.status)))
    elif metric == "p99_latency_ms":
        chosen = [o for o in inside if not wanted or o.status in wanted]
        evidence["measured"] = len(chosen)
        p99 = nearest_rank([o.latency_s for o in chosen], 99)
        observed = None if p99 is None else p99 * 1000
        if chosen:
            evidence["max_latency_ms"] = plain(max(o.latency_s for o in chosen) * 1000)
    elif metric == "max_retry_after_s":
        said = [_retry_after(o) for o in inside if not wanted or o.status in wanted]
        given = [v for v in said if v is not None]
        evidence["measured"] = len(said)
        evidence["without_retry_after"] = len(said) - len(given)
        observed = max(given) if given else None
    elif metric in ("min_latency_s", "max_latency_s"):
        chosen = [o.latency_s for o in inside if not wanted or o.status in wanted]
        evidence["measured"] = len(chosen)
        pick = min if metric == "min_latency_s" else max
        observed = pick(chosen) if chosen else None
    elif metric == "admitted_over_envelope":
        observed = _over_envelope(spec, env, inside, evidence)
    elif metric == "breaker_mismatches":
        roles = (
            "failure_rate",
            "window",
            "min_calls",
            "consecutive_failures",
            "half_open_calls",
            "open_seconds",
        )
        _, numbers = used_settings(spec, env, roles)
        policy = BreakerRules(*numbers)
        failures = wanted or {s for s in range(500, 600) if s != 503}
        replay = replay_breaker([(o.t, o.latency_s, o.status) for o in inside], policy, failures)
        evidence["configured"] = {role: plain(n) for role, n in zip(roles, numbers, strict=True)}
        evidence.update(replay.evidence())
        observed = float(len(replay.mismatches))
    elif metric == "time_to_detect_s":
        observed = _time_to_detect(inside, wanted, start, evidence)
    elif metric == "time_to_recover_s":
        observed = _time_to_recover(everything, wanted, end, evidence)
    else:  # pragma: no cover - the model's Literal forbids it
        raise CheckError(f"unknown traffic metric {metric!r}")
    passed = compare(observed, spec.op, spec.value, spec.tolerance)
    evidence.update(comparison_evidence(observed, spec.op, spec.value, passed, spec.tolerance))
    return passed, evidence


def _retry_after(o: Observation) -> float | None:
    """The response's Retry-After in seconds (delay-seconds only: the platform never sends an
    HTTP date), None when absent or unreadable."""
    for name, value in o.headers.items():
        if name.lower() == "retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def used_settings(
    spec: TrafficCheck, env: CheckEnv, roles: tuple[str, ...]
) -> tuple[dict[str, str], list[float]]:
    """The configured numbers a metric needs, read at the end of the check's window."""
    missing = [role for role in roles if role not in spec.uses]
    if missing:
        raise CheckError(f"{spec.metric} needs `uses` to name: {', '.join(missing)}")
    end = phase_of(env.ctx, spec.window).end
    return spec.uses, [read_setting(env, spec.uses[role], end) for role in roles]


def _over_envelope(
    spec: TrafficCheck, env: CheckEnv, inside: list[Observation], evidence: dict[str, Any]
) -> float | None:
    """How far the requests the limiter admitted (any answer but 429) lie outside what GCRA,
    a token bucket of ``limit`` refilled at ``limit / window`` per second, promises:

    * never more: in no stretch of the run [a, b] more than limit + rate x (b - a) admitted;
    * never refused early: before each 429 there is a stretch [a, 429) in which the client
      already got more than limit - 1 + rate x (429 - a) through (less than one request was
      left), however slowly it sent before (a bucket never holds more than ``limit``, so idle
      time is not banked).

    0 when both hold, else the signed distance to the bound crossed (over: positive)."""
    names, (limit, window) = used_settings(spec, env, ("limit", "window"))
    answered = sorted((o for o in inside if o.status != 0), key=lambda o: o.t)
    if not answered or window <= 0 or limit <= 0:
        return None
    rate = limit / window
    times = [o.t for o in answered if o.status != 429]
    over = (
        max(
            (j - i + 1) - (limit + rate * (times[j] - times[i]))
            for i in range(len(times))
            for j in range(i, len(times))
        )
        if times
        else 0.0
    )
    refusals = [o.t for o in answered if o.status == 429]
    under = 0.0
    for refused_at in refusals:
        before = [t for t in times if t < refused_at]
        best = (
            max((len(before) - i) - rate * (refused_at - before[i]) for i in range(len(before)))
            if before
            else 0.0
        )
        # Refused: the bucket held less than one whole request, so best > limit - 1.
        under = min(under, best - (limit - 1))
    evidence.update(
        {
            "admitted": len(times),
            "limited": len(refusals),
            "elapsed_s": plain(answered[-1].t - answered[0].t),
            "most_over_the_bucket": plain(over),
            "most_refused_early": plain(-under),
            "bucket": (
                f"{names['limit']} {plain(limit)} at once, refilled at {plain(limit)} / "
                f"{names['window']} {plain(window)} per second"
            ),
        }
    )
    return over if over > 0 else under


def _time_to_detect(
    inside: list[Observation], wanted: set[int], start: float, evidence: dict[str, Any]
) -> float | None:
    """Seconds from the phase start until the first `statuses` response (any non-2xx when
    `statuses` is empty) arrived."""
    for o in inside:
        if (o.status in wanted) if wanted else not _ok(o.status):
            evidence["first_detected"] = {
                "status": o.status,
                "sent_after_s": plain(o.t - start),
                "route": o.route,
            }
            return max(0.0, o.t + o.latency_s - start)
    evidence["first_detected"] = None
    return None


def _time_to_recover(
    everything: list[Observation], wanted: set[int], end: float, evidence: dict[str, Any]
) -> float | None:
    """Seconds from the phase end until the first of RECOVERY_RUN consecutive successes (2xx,
    or `statuses` when given) arrived; responses sent after the phase end only."""
    after = [o for o in everything if o.t >= end]
    evidence["responses_after_phase"] = len(after)
    run: list[Observation] = []
    for o in after:
        good = (o.status in wanted) if wanted else _ok(o.status)
        run = [*run, o] if good else []
        if len(run) == RECOVERY_RUN:
            first = run[0]
            evidence["recovered_with"] = [
                {"status": r.status, "sent_after_s": plain(r.t - end)} for r in run
            ]
            return max(0.0, first.t + first.latency_s - end)
    evidence["recovered_with"] = None
    return None
