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


def evaluate(spec: LogsCheck, env: CheckEnv) -> tuple[bool, dict[str, Any]]:
    phase = phase_of(env.ctx, spec.window)
    events = events_in(env, spec.service, phase)
    hits = [item for item in events if matches(item[2], spec.match)]
    passed = compare(len(hits), spec.op, spec.count)
    evidence: dict[str, Any] = {
        "service": spec.service,
        "match": spec.match,
        "window": window_evidence(phase),
        "events_in_window": len(events),
        "count": len(hits),
        **comparison_evidence(len(hits), spec.op, spec.count, passed),
        "examples": [event for _, _, event in hits[:MAX_EXAMPLES]],
    }
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
