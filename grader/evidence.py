"""Raw evidence: what a check read while it was graded, kept so it can be graded again offline.

A live check reads three sources: Prometheus (``env.prom``), the public API (``env.http``) and the
services' logs (``env.ctx.logs``), plus the run's own traffic records (``env.ctx.traffic``).
:func:`recording_env` hands the evaluator proxies of those sources that pass every call through
and keep a copy of what came back (a *tape*); :func:`replay_env` builds an environment whose
sources answer from a tape alone. Re-grading is therefore the same evaluator on the replayed
environment (:func:`grader.evaluate.reevaluate`): the comparison logic is never copied, and a
change to a check kind re-grades old evidence the new way.

What a tape holds (``CheckResult.raw``):

- ``phases``, ``params``: the run's phase windows (ISO moments) and parameters;
- ``prometheus``: every query with its full answer (instant samples, or every point of every
  series of a range query), as Prometheus gave it;
- ``http``: every API read of an invariant check (method, path, query, status, body), access
  tokens redacted;
- ``logs``: the log events a log check counted: those inside its phase that match ``match``
  or ``before`` (the others cannot change its verdict, only the ``events_in_window`` count);
- ``traffic``: every response each generator the check looked at recorded (columns).

A replayed source that is asked something the tape does not hold raises :class:`CheckError`,
so a check re-graded against a different query or a different window fails with that reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx

from grader.checks.common import CheckEnv, CheckError
from grader.model import Account, CheckSpec, LogsCheck, Observation, Phase, RunContext
from grader.prometheus import PrometheusError, Sample, Series, to_epoch

__all__ = ["REPLAY_GATEWAY", "Tape", "recording_env", "replay_env"]

REPLAY_GATEWAY = "http://replay.invalid"
_REDACTED_FIELDS = ("access_token", "refresh_token", "token")
_KEPT_HEADERS = ("retry-after", "content-type")


def _number(value: float) -> str:
    """Prometheus's own spelling of a sample value (keeps NaN and Inf through JSON)."""
    return repr(float(value)) if math.isfinite(value) else str(value)


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


class Tape:
    """The reads of one check, in the order they happened."""

    def __init__(self) -> None:
        self.prometheus: list[dict[str, Any]] = []
        self.http: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.generators: list[str] = []


class _RecordingProm:
    def __init__(self, real: Callable[[], Any], tape: Tape) -> None:
        self._real = real
        self._tape = tape

    def query(self, promql: str, at: datetime | float | None = None) -> list[Sample]:
        entry: dict[str, Any] = {"call": "query", "query": promql}
        if at is not None:
            entry["at"] = to_epoch(at)
        try:
            samples = self._real().query(promql, at=at)
        except PrometheusError as exc:
            self._tape.prometheus.append({**entry, "error": str(exc)})
            raise
        entry["result"] = [{"labels": s.labels, "t": s.t, "v": _number(s.v)} for s in samples]
        self._tape.prometheus.append(entry)
        return samples

    def query_range(
        self, promql: str, start: datetime | float, end: datetime | float, step: float = 1.0
    ) -> list[Series]:
        entry: dict[str, Any] = {
            "call": "query_range",
            "query": promql,
            "start": to_epoch(start),
            "end": to_epoch(end),
            "step": step,
        }
        try:
            series = self._real().query_range(promql, start, end, step)
        except PrometheusError as exc:
            self._tape.prometheus.append({**entry, "error": str(exc)})
            raise
        entry["result"] = [
            {"labels": s.labels, "points": [[t, _number(v)] for t, v in s.points]} for s in series
        ]
        self._tape.prometheus.append(entry)
        return series

    def wait_for_scrape_after(self, moment: datetime | float, *args: Any, **kwargs: Any) -> bool:
        fresh = self._real().wait_for_scrape_after(moment, *args, **kwargs)
        self._tape.prometheus.append({"call": "fresh", "at": to_epoch(moment), "result": fresh})
        return fresh

    def close(self) -> None:
        return None


def _redact(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict) and any(k in body for k in _REDACTED_FIELDS):
        body = {k: ("redacted" if k in _REDACTED_FIELDS else v) for k, v in body.items()}
        return json.dumps(body)
    return text


def _query_key(params: Any) -> list[list[str]]:
    items = dict(params or {}).items()
    return sorted([str(k), str(v)] for k, v in items)


class _RecordingHttp:
    def __init__(self, real: Callable[[], httpx.Client], base: str, tape: Tape) -> None:
        self._real = real
        self._base = base.rstrip("/")
        self._tape = tape

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        entry: dict[str, Any] = {
            "method": method.upper(),
            "path": url.removeprefix(self._base),
            "params": _query_key(kwargs.get("params")),
        }
        try:
            response = self._real().request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self._tape.http.append({**entry, "error": f"{type(exc).__name__}: {exc}"})
            raise
        entry["status"] = response.status_code
        entry["headers"] = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
        entry["body"] = _redact(response.text)
        self._tape.http.append(entry)
        return response

    def close(self) -> None:
        return None


class _RecordingLogs:
    def __init__(self, real: Any, tape: Tape) -> None:
        self._real = real
        self._tape = tape

    def log_events(self, name: str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        events = [e for e in self._real.log_events(name, since=since) if isinstance(e, dict)]
        self._tape.logs.append(
            {"service": name, "since": since.isoformat() if since else None, "events": events}
        )
        return iter(events)


class _RecordingTraffic(dict):
    """The run's traffic records; notes which generators a check looked at."""

    def __init__(self, data: dict[str, list[Observation]], tape: Tape) -> None:
        super().__init__(data)
        self._tape = tape

    def __getitem__(self, key: str) -> list[Observation]:
        if key not in self._tape.generators:
            self._tape.generators.append(key)
        return super().__getitem__(key)


def recording_env(env: CheckEnv) -> tuple[CheckEnv, Tape]:
    """An environment for one check that reads through ``env``'s clients and records."""
    tape = Tape()
    ctx = env.ctx
    logs = _RecordingLogs(ctx.logs, tape) if ctx.logs is not None else None
    recorded_ctx = ctx.model_copy(
        update={"logs": logs, "traffic": _RecordingTraffic(ctx.traffic, tape)}
    )
    recorded = CheckEnv(
        ctx=recorded_ctx,
        http_timeout=env.http_timeout,
        _prom=_RecordingProm(lambda: env.prom, tape),  # type: ignore[arg-type]
        _http=_RecordingHttp(lambda: env.http, ctx.gateway_url, tape),  # type: ignore[arg-type]
        tokens=env.tokens,
        sleep=env.sleep,
    )
    return recorded, tape


def _observations_columns(observations: list[Observation]) -> dict[str, list[Any]]:
    return {
        "t": [o.t for o in observations],
        "status": [o.status for o in observations],
        "latency_s": [o.latency_s for o in observations],
        "route": [o.route for o in observations],
        # The answers' headers a check reads (request ids, Retry-After, RateLimit-*).
        "headers": [o.headers for o in observations],
    }


def _keep_log_event(spec: CheckSpec, phase: Phase | None) -> Callable[[dict[str, Any]], bool]:
    from grader.checks.logs import event_time, matches  # the log check's own reading

    if not isinstance(spec, LogsCheck) or phase is None:
        return lambda event: True
    start, end = to_epoch(phase.start), to_epoch(phase.end)

    def keep(event: dict[str, Any]) -> bool:
        moment = event_time(event)
        if moment is None or not start <= moment <= end:
            return False
        selectors = [spec.match, spec.before, spec.after, spec.until]
        return any(wanted is not None and matches(event, wanted) for wanted in selectors)

    return keep


def tape_evidence(spec: CheckSpec, env: CheckEnv, tape: Tape) -> dict[str, Any]:
    """The stored form of a tape (JSON-ready), trimmed to what can change the verdict."""
    ctx = env.ctx
    phase = ctx.phases.get(getattr(spec, "window", "drill"))
    keep = _keep_log_event(spec, phase)
    raw: dict[str, Any] = {
        "phases": {n: [p.start.isoformat(), p.end.isoformat()] for n, p in ctx.phases.items()},
        "params": ctx.params,
        "accounts": {n: a.username for n, a in ctx.accounts.items()},
    }
    if tape.prometheus:
        raw["prometheus"] = tape.prometheus
    if tape.http:
        raw["http"] = tape.http
    if tape.logs:
        raw["logs"] = [
            {**read, "events": [e for e in read["events"] if keep(e)]} for read in tape.logs
        ]
    if tape.generators:
        raw["traffic"] = {
            name: _observations_columns(list(ctx.traffic.get(name, []))) for name in tape.generators
        }
    return raw


# --- replay -------------------------------------------------------------------------------


def _missing(what: str) -> CheckError:
    return CheckError(f"the run's stored evidence holds no answer to {what}")


class _ReplayProm:
    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self._calls = list(calls)

    def _take(self, call: str, query: str | None, times: dict[str, float]) -> dict[str, Any]:
        for index, entry in enumerate(self._calls):
            if entry.get("call") != call or (query is not None and entry.get("query") != query):
                continue
            if any(abs(_float(entry.get(k)) - v) > 1e-3 for k, v in times.items()):
                continue
            return self._calls.pop(index)
        raise _missing(f"{call} {query!r}" if query else call)

    def query(self, promql: str, at: datetime | float | None = None) -> list[Sample]:
        times = {"at": to_epoch(at)} if at is not None else {}
        entry = self._take("query", promql, times)
        if "error" in entry:
            raise PrometheusError(str(entry["error"]))
        return [
            Sample(labels=dict(s.get("labels", {})), t=_float(s.get("t")), v=_float(s.get("v")))
            for s in entry.get("result", [])
        ]

    def query_range(
        self, promql: str, start: datetime | float, end: datetime | float, step: float = 1.0
    ) -> list[Series]:
        times = {"start": to_epoch(start), "end": to_epoch(end)}
        entry = self._take("query_range", promql, times)
        if "error" in entry:
            raise PrometheusError(str(entry["error"]))
        return [
            Series(
                labels=dict(s.get("labels", {})),
                points=[(_float(t), _float(v)) for t, v in s.get("points", [])],
            )
            for s in entry.get("result", [])
        ]

    def wait_for_scrape_after(self, moment: datetime | float, *args: Any, **kwargs: Any) -> bool:
        try:
            return bool(self._take("fresh", None, {"at": to_epoch(moment)}).get("result"))
        except CheckError:
            return False

    def close(self) -> None:
        return None


class _ReplayHttp:
    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self._calls = list(calls)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        path = url.removeprefix(REPLAY_GATEWAY)
        params = _query_key(kwargs.get("params"))
        for index, entry in enumerate(self._calls):
            if (entry.get("method"), entry.get("path"), entry.get("params")) == (
                method.upper(),
                path,
                params,
            ):
                self._calls.pop(index)
                if "error" in entry:
                    raise httpx.TransportError(str(entry["error"]))
                return httpx.Response(
                    int(entry.get("status", 0)),
                    headers=dict(entry.get("headers", {})),
                    content=str(entry.get("body", "")).encode(),
                    request=httpx.Request(method, url),
                )
        query = "&".join(f"{k}={v}" for k, v in params)
        raise _missing(f"{method.upper()} {path}{'?' + query if query else ''}")

    def close(self) -> None:
        return None


class _ReplayLogs:
    def __init__(self, reads: list[dict[str, Any]]) -> None:
        self._reads = list(reads)

    def log_events(self, name: str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        for index, read in enumerate(self._reads):
            if read.get("service") == name:
                self._reads.pop(index)
                return iter(list(read.get("events", [])))
        raise _missing(f"a read of {name}'s logs")


def _observations(name: str, columns: dict[str, list[Any]]) -> list[Observation]:
    routes = columns.get("route") or [""] * len(columns.get("t", []))
    headers = columns.get("headers") or [{}] * len(columns.get("t", []))  # older tapes: none
    return [
        Observation(
            generator=name, t=t, status=status, latency_s=latency, route=route, headers=kept
        )
        for t, status, latency, route, kept in zip(
            columns.get("t", []),
            columns.get("status", []),
            columns.get("latency_s", []),
            routes,
            headers,
            strict=True,
        )
    ]


def replay_env(raw: dict[str, Any] | None) -> CheckEnv:
    """An environment that answers only from a stored tape; it never touches the network."""
    if not isinstance(raw, dict):
        raise CheckError("the run holds no raw evidence for this check")
    try:
        phases = {
            name: Phase(
                name=name,
                start=datetime.fromisoformat(bounds[0]),
                end=datetime.fromisoformat(bounds[1]),
            )
            for name, bounds in dict(raw.get("phases", {})).items()
        }
        traffic = {
            name: _observations(name, columns)
            for name, columns in dict(raw.get("traffic", {})).items()
        }
    except (TypeError, ValueError, IndexError) as exc:
        raise CheckError(f"the run's stored evidence is malformed ({exc})") from None
    ctx = RunContext(
        prometheus_url=REPLAY_GATEWAY,
        gateway_url=REPLAY_GATEWAY,
        phases=phases,
        traffic=traffic,
        accounts={
            name: Account(username=str(user), password="replay", token="replay")  # noqa: S106
            for name, user in dict(raw.get("accounts", {})).items()
        },
        params=dict(raw.get("params", {})),
        logs=_ReplayLogs(list(raw.get("logs", []))),
    )
    return CheckEnv(
        ctx=ctx,
        _prom=_ReplayProm(list(raw.get("prometheus", []))),  # type: ignore[arg-type]
        _http=_ReplayHttp(list(raw.get("http", []))),  # type: ignore[arg-type]
        sleep=lambda _seconds: None,
    )
