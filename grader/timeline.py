"""The drill's timeline across services: their JSON log events, joined on request id.

Every service logs one ``request`` event when it answers (with ``duration_ms``, so the request's
start is known too) and named events along the way (``lock_lost``, ``circuit_state_changed``),
all stamped with the request id the gateway gave the call and passed on to each upstream
(``X-Request-ID``). One request id is one *trace*: the client's call, the gateway's answer, and
what each service behind it did. The report draws them as a swimlane chart, one lane per
service, with the drill's phases shaded (grader.svg.swimlane), and lists them in report.md.

A busy drill sends hundreds of requests; drawing them all would hide the story. The timeline
keeps every trace when there are few, and otherwise one trace of each kind (route, services
reached, statuses) first, then evenly spaced others, up to ``MAX_TRACES``; named events are
kept up to ``MAX_EVENTS_PER_NAME`` per service. ``counts`` keeps every event's total, so
nothing left out goes unmentioned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from grader.model import Observation, Timeline, TimelineEvent

__all__ = ["CLIENT", "MAX_TRACES", "build_timeline", "event_time"]

CLIENT = "client"  # the lane of what the drill's clients saw
MAX_TRACES = 24
MAX_EVENTS_PER_NAME = 30
# uvicorn's own lines ("Started server process [12]") are prose, not events.
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Fields that say what a named event is about, shown next to it (in this order).
_DETAIL_FIELDS = (
    "upstream",
    "from_state",
    "to_state",
    "reason",
    "fault",
    "operation",
    "asset_id",
    "amount",
    "policy",
    "dependency",
)


def event_time(value: Any) -> float | None:
    """Epoch seconds of a log event's ISO-8601 ``timestamp``; None when it has none."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _detail(event: Mapping[str, Any]) -> str:
    if event.get("event") == "request":
        return f"{event.get('method', '')} {event.get('path', '')}".strip()
    parts = []
    for key in _DETAIL_FIELDS:
        if key in event and event[key] is not None:
            parts.append(f"{key}={event[key]}")
    return " ".join(parts)


def _service_events(
    service: str, events: Iterable[Mapping[str, Any]], start: float, end: float
) -> list[TimelineEvent]:
    out = []
    for event in events:
        name = event.get("event")
        t = event_time(event.get("timestamp"))
        if not isinstance(name, str) or not _EVENT_NAME.match(name) or t is None:
            continue
        duration = None
        if name == "request":
            try:
                duration = max(0.0, float(event.get("duration_ms", 0)) / 1000)
            except (TypeError, ValueError):
                duration = 0.0
        if t < start or t - (duration or 0.0) > end:
            continue
        status = event.get("status")
        out.append(
            TimelineEvent(
                t=t,
                service=service,
                event=name,
                request_id=event.get("request_id") or None,
                duration_s=duration,
                status=status if isinstance(status, int) else None,
                detail=_detail(event),
            )
        )
    return out


def _client_events(
    observations: Mapping[str, list[Observation]], start: float, end: float
) -> list[TimelineEvent]:
    """What each client saw, one ``response`` per request, from the drill's traffic records.

    Generators record some requests twice (``browse`` and ``browse.assets``); the shortest name
    is the one kept."""
    seen: dict[tuple[float, str], TimelineEvent] = {}
    for generator in sorted(observations, key=lambda g: (g.count("."), g)):
        for obs in observations[generator]:
            if obs.t < start or obs.t > end:
                continue
            key = (obs.t, obs.route)
            if key in seen:
                continue
            headers = {k.lower(): v for k, v in obs.headers.items()}
            seen[key] = TimelineEvent(
                t=obs.t + obs.latency_s,
                service=CLIENT,
                event="response",
                request_id=headers.get("x-request-id"),
                duration_s=obs.latency_s,
                status=obs.status,
                detail=(generator if obs.route == generator else f"{generator}: {obs.route}")
                + (f" ({obs.error})" if obs.error else ""),
            )
    return list(seen.values())


def _kind(events: list[TimelineEvent]) -> tuple[Any, ...]:
    """What makes two traces the same story: route, services reached, statuses, events."""
    first = min(events, key=lambda e: e.t - (e.duration_s or 0))
    return (
        first.detail,
        tuple(sorted({e.service for e in events})),
        tuple(sorted({e.status for e in events if e.status is not None})),
        tuple(sorted({e.event for e in events if e.event not in ("request", "response")})),
    )


def _choose(traces: dict[str, list[TimelineEvent]], limit: int) -> list[str]:
    """Every trace when few; else one of each kind, then evenly spaced others."""
    ordered = sorted(traces, key=lambda rid: min(e.t - (e.duration_s or 0) for e in traces[rid]))
    if len(ordered) <= limit:
        return ordered
    chosen: list[str] = []
    kinds: set[tuple[Any, ...]] = set()
    for rid in ordered:
        kind = _kind(traces[rid])
        if kind not in kinds:
            kinds.add(kind)
            chosen.append(rid)
    chosen = chosen[:limit]
    taken = set(chosen)
    rest = [rid for rid in ordered if rid not in taken]
    room = limit - len(chosen)
    if room > 0 and rest:
        step = len(rest) / room
        chosen.extend(rest[int(i * step)] for i in range(min(room, len(rest))))
    position = {rid: i for i, rid in enumerate(ordered)}
    return sorted(set(chosen), key=position.__getitem__)


def _label(events: list[TimelineEvent]) -> str:
    """How a trace is named: the gateway's route and what the client (else the gateway) got."""
    gateway = next((e for e in events if e.service == "gateway" and e.event == "request"), None)
    client = next((e for e in events if e.service == CLIENT), None)
    if gateway is None and client is None:
        first = min(events, key=lambda e: e.t)
        return f"{first.service}: {first.detail or first.event}"
    route = gateway.detail if gateway else client.detail if client else ""
    answer = client if client is not None else gateway
    status = str(answer.status) if answer and answer.status else "no answer"
    return f"{route} → {status}"


def build_timeline(
    logs: Mapping[str, Iterable[Mapping[str, Any]]],
    observations: Mapping[str, list[Observation]],
    start: datetime,
    end: datetime,
    *,
    max_traces: int = MAX_TRACES,
) -> Timeline:
    """The timeline of ``[start, end]`` from each service's log events and the traffic records.

    ``logs`` maps a service name to its JSON log events (any order, any time range: only those
    inside the window are used)."""
    lo, hi = start.timestamp(), end.timestamp()
    everything = _client_events(observations, lo, hi)
    for service, events in logs.items():
        everything.extend(_service_events(service, events, lo, hi))
    counts: dict[str, dict[str, int]] = {}
    for e in everything:
        lane = counts.setdefault(e.service, {})
        lane[e.event] = lane.get(e.event, 0) + 1

    traces: dict[str, list[TimelineEvent]] = {}
    for e in everything:
        if e.request_id:
            traces.setdefault(e.request_id, []).append(e)
    # A trace the services never logged (a refusal before any log line) is only the client's.
    chosen = _choose(traces, max_traces)
    numbers = {rid: i + 1 for i, rid in enumerate(chosen)}

    kept: list[TimelineEvent] = []
    per_name: dict[tuple[str, str], int] = {}
    for e in sorted(everything, key=lambda e: e.t):
        if e.request_id in numbers:
            kept.append(e.model_copy(update={"trace": numbers[e.request_id]}))
            continue
        if e.event in ("request", "response"):
            continue
        key = (e.service, e.event)
        per_name[key] = per_name.get(key, 0) + 1
        if per_name[key] <= MAX_EVENTS_PER_NAME:
            kept.append(e)
    return Timeline(
        events=kept,
        traces={numbers[rid]: _label(traces[rid]) for rid in chosen},
        request_ids={numbers[rid]: rid for rid in chosen},
        counts=counts,
        traces_total=len(traces),
    )
