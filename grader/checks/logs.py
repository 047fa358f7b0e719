"""Log checks: count a service's JSON log events within a phase, optionally prove an ordering.

Events come from the runtime's ``log_events`` (the only log access the grader has); an event
matches when each field in ``match`` equals the expected value, or any of them for a list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from grader.checks.common import (
    CheckEnv,
    CheckError,
    compare,
    comparison_evidence,
    phase_of,
    window_evidence,
)
from grader.model import LogsCheck, Phase
from grader.prometheus import to_epoch

MAX_EXAMPLES = 5
MAX_STRETCHES = 20  # most_between: the stretches shown in the evidence
_MISSING = object()


def event_time(event: dict[str, Any]) -> float | None:
    raw = event.get("timestamp")
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _field(event: dict[str, Any], name: str) -> Any:
    """A top-level field, or a nested one by dotted path (``error.type``)."""
    if name in event:
        return event[name]
    value: Any = event
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _equal(actual: Any, expected: Any) -> bool:
    if actual == expected:
        return True
    # 429 in a scenario file and "429" in a log line (or the reverse) mean the same thing.
    scalars = (str, int, float, bool)
    return (
        isinstance(actual, scalars)
        and isinstance(expected, scalars)
        and not isinstance(actual, bool)
        and not isinstance(expected, bool)
        and str(actual) == str(expected)
    )


def matches(event: dict[str, Any], match: dict[str, Any]) -> bool:
    for name, expected in match.items():
        actual = _field(event, name)
        if actual is _MISSING:
            return False
        options = expected if isinstance(expected, list) else [expected]
        if not any(_equal(actual, option) for option in options):
            return False
    return True


def events_in(env: CheckEnv, service: str, phase: Phase) -> list[tuple[float, int, dict]]:
    """(time, position, event) of the service's events within the phase, oldest first."""
    source = env.ctx.logs
    if source is None or not hasattr(source, "log_events"):
        raise CheckError("the run has no log source, so log checks cannot be evaluated")
    start, end = to_epoch(phase.start), to_epoch(phase.end)
    found = []
    for position, event in enumerate(source.log_events(service, since=phase.start)):
        if not isinstance(event, dict):
            continue
        moment = event_time(event)
        if moment is not None and start <= moment <= end:
            found.append((moment, position, event))
    found.sort(key=lambda item: (item[0], item[1]))
    return found


Item = tuple[float, int, dict[str, Any]]  # (time, position in its log, event)


def _started(item: Item) -> Item:
    """The same event placed at the moment its request started (``duration_ms`` earlier)."""
    moment, position, event = item
    duration = event.get("duration_ms")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        moment -= duration / 1000
    return moment, position, event


def _bounds(
    spec: LogsCheck, env: CheckEnv, phase: Phase, events: list[Item]
) -> tuple[Item | None, Item | None, dict[str, Any]]:
    """The `after` and `until` events that bound the counting (None where not asked for);
    the evidence says which were found. Raises CheckError when an asked-for bound is missing."""
    where = spec.bounds_service or spec.service
    pool = events if where == spec.service else events_in(env, where, phase)
    info: dict[str, Any] = {"bounds_service": where}
    afters = [i for i in pool if matches(i[2], spec.after)] if spec.after else []
    if spec.after and not afters:
        raise CheckError(f"no {where} event matching `after` {spec.after} in the window")
    start = afters[0] if afters else None
    until = None
    if spec.until:
        later = [
            i for i in pool if matches(i[2], spec.until) and (start is None or i[:2] > start[:2])
        ]
        if not later:
            raise CheckError(f"no {where} event matching `until` {spec.until} in the window")
        until = later[0]
        if afters:
            start = [i for i in afters if i[:2] < until[:2]][-1]
    if start is not None:
        info["after_at"] = _iso(start[0])
        info["after_event"] = start[2]
    if until is not None:
        info["until_at"] = _iso(until[0])
        info["until_event"] = until[2]
    return start, until, info


def _between(item: Item, start: Item | None, until: Item | None, same_log: bool) -> bool:
    """Strictly between the bounds; within one log its order breaks timestamp ties."""
    key = item[:2] if same_log else (item[0],)
    if start is not None and not key > (start[:2] if same_log else (start[0],)):
        return False
    return until is None or key < (until[:2] if same_log else (until[0],))


def _most_between(
    spec: LogsCheck,
    env: CheckEnv,
    phase: Phase,
    events: list[Item],
    counted: list[Item],
    same_log: bool,
    evidence: dict[str, Any],
) -> tuple[float, list[Item]]:
    """The most `match` events in any stretch from an `after` event to the first `until` event
    after it (every half-open round of a breaker, not just one, keeps to its trial budget),
    and the events counted in any stretch."""
    if not spec.after:
        raise CheckError("measure most_between needs `after` (where each stretch begins)")
    where = spec.bounds_service or spec.service
    pool = events if where == spec.service else events_in(env, where, phase)
    starts = [i for i in pool if matches(i[2], spec.after)]
    if not starts:
        raise CheckError(f"no {where} event matching `after` {spec.after} in the window")
    ends = [i for i in pool if matches(i[2], spec.until)] if spec.until else []
    stretches: list[dict[str, Any]] = []
    inside: list[Item] = []
    for start in starts:
        until = next((i for i in ends if i[:2] > start[:2]), None)
        hits = [
            item
            for item in counted
            if matches(item[2], spec.match) and _between(item, start, until, same_log)
        ]
        inside.extend(hits)
        stretches.append(
            {
                "from": _iso(start[0]),
                "until": _iso(until[0]) if until else None,
                "count": len(hits),
            }
        )
    evidence["bounds_service"] = where
    evidence["stretches"] = stretches[:MAX_STRETCHES]
    return float(max(s["count"] for s in stretches)), inside


def _per_request(
    spec: LogsCheck, env: CheckEnv, hits: list[Item], evidence: dict[str, Any]
) -> float | None:
    """Upstream events per client request: the count farthest from the expected one."""
    name = spec.generator or ""
    if name not in env.ctx.traffic:
        known = ", ".join(sorted(env.ctx.traffic)) or "none"
        raise CheckError(f"no traffic recorded for generator {name!r} (known: {known})")
    wanted = set(spec.statuses)
    ids = [
        o.request_id
        for o in env.ctx.traffic[name]
        if o.request_id and (not wanted or o.status in wanted)
    ]
    per_id = {request_id: 0 for request_id in ids}
    for _, _, event in hits:
        request_id = event.get("request_id")
        if request_id in per_id:
            per_id[request_id] += 1
    counts = sorted(per_id.values())
    evidence["requests"] = len(counts)
    evidence["requests_by_count"] = {str(c): counts.count(c) for c in sorted(set(counts))}
    if not counts:
        return None
    return max(counts, key=lambda c: (abs(c - spec.count), c))


def evaluate(spec: LogsCheck, env: CheckEnv) -> tuple[bool, dict[str, Any]]:
    phase = phase_of(env.ctx, spec.window)
    events = events_in(env, spec.service, phase)
    evidence: dict[str, Any] = {
        "service": spec.service,
        "match": spec.match,
        "measure": spec.measure,
        "window": window_evidence(phase),
        "events_in_window": len(events),
    }
    start = until = None
    if (spec.after or spec.until) and spec.measure != "most_between":
        start, until, evidence["bounds"] = _bounds(spec, env, phase, events)
    counted = events
    if spec.timed_by == "start":
        counted = sorted((_started(i) for i in events), key=lambda i: (i[0], i[1]))
    same_log = (spec.bounds_service or spec.service) == spec.service and spec.timed_by == "end"
    hits = [
        item
        for item in counted
        if matches(item[2], spec.match) and _between(item, start, until, same_log)
    ]
    observed: float | None
    if spec.measure == "interval_s":
        if start is None or until is None:
            raise CheckError("measure interval_s needs both `after` and `until`")
        observed = until[0] - start[0]
    elif spec.measure == "per_request":
        observed = _per_request(spec, env, hits, evidence)
    elif spec.measure == "most_between":
        observed, hits = _most_between(spec, env, phase, events, counted, same_log, evidence)
    else:
        observed = float(len(hits))
    passed = compare(observed, spec.op, spec.count, spec.tolerance)
    evidence.update(
        {
            "count": len(hits),
            **comparison_evidence(observed, spec.op, spec.count, passed, spec.tolerance),
            "examples": [event for _, _, event in hits[:MAX_EXAMPLES]],
        }
    )
    if spec.before is not None:
        other_service = spec.before_service or spec.service
        others = events if other_service == spec.service else events_in(env, other_service, phase)
        later = [item for item in others if matches(item[2], spec.before)]
        first = hits[0] if hits else None
        then = later[0] if later else None
        if first is None or then is None:
            in_order = False
            why = "no event matching `match`" if first is None else "no event matching `before`"
        else:
            # Same service: the log's own order breaks timestamp ties.
            same = other_service == spec.service
            in_order = (first[0], first[1]) < (then[0], then[1]) if same else first[0] < then[0]
            why = "in order" if in_order else "out of order"
        evidence["ordering"] = {
            "before": spec.before,
            "before_service": other_service,
            "first_match_at": _iso(first[0]) if first else None,
            "first_before_at": _iso(then[0]) if then else None,
            "result": why,
        }
        if then is not None:
            evidence["ordering"]["first_before_event"] = then[2]
        passed = passed and in_order
    return passed, evidence


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()
