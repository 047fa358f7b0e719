"""The data the scenario engine hands the grader, and what the grader gives back.

This module is the seam between ``scenarios`` (which runs drills) and ``grader`` (which judges
them): check *specs* are data parsed from scenario YAML, a :class:`RunContext` is everything a
check may look at, and :class:`CheckResult` / :class:`RunResult` are what reports render.
``RunResult`` is serialised as ``result.json`` (``schema_version`` below).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grader.findings import Finding

# 1.1 added each check's raw evidence (``CheckResult.raw``), the run's provenance and its seal;
# 1.2 the scenario's `teaches`, phase notes, chart value names, the timeline, Prometheus's
# address, and a security scan's findings, its engine run and the flaws that were on
# (``lab scan``); every 1.x result reads with this model (the new fields are optional).
RESULT_SCHEMA_VERSION = "1.2"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,60}$")
    title: str
    points: int = Field(default=1, ge=0)
    required: bool = True
    hint: str = ""
    # Which protection the check guards; `lab selftest` expects it to fail when that is off.
    guards: str | None = None
    # The expected value is the platform's configured number instead of a constant:
    # ``service.field`` of its settings in force (the ``cnop_setting`` metric, read at the end
    # of the check's window), plus ``setting_offset``. The check's `value` (`count`) is ignored.
    setting: str | None = Field(default=None, pattern=r"^[a-z]+\.[a-z0-9_]+$")
    setting_offset: float = 0
    # How far the observation may lie from the expected value and still pass (`==` within
    # +- tolerance; `<=` up to expected + tolerance; `>=` down to expected - tolerance).
    tolerance: float = Field(default=0, ge=0)


Comparison = Literal["<", "<=", "==", "!=", ">=", ">"]


def _needs_value(spec: Any) -> Any:
    if spec.value is None and spec.setting is None:
        raise ValueError("needs `value` (or `setting`, the configured number to compare with)")
    return spec


class PromQLCheck(_Spec):
    kind: Literal["promql"] = "promql"
    query: str  # may use {window} (e.g. "45s") and {param} placeholders
    window: str = "drill"  # a phase name ("drill", "fault", "recovery", ...)
    mode: Literal["instant", "range"] = "instant"
    reduce: Literal["sum", "max", "min", "last", "count"] = "sum"  # over series (and samples)
    op: Comparison
    value: float = None  # type: ignore[assignment]  # required unless `setting` gives it

    _value_or_setting = model_validator(mode="after")(lambda self: _needs_value(self))

    @field_validator("query")
    @classmethod
    def _no_offset(cls, query: str) -> str:
        # ``x - x offset w`` goes negative when a service restarts inside w (its counters start
        # again at 0); increase() and resets() know about resets.
        if _OFFSET.search(query):
            raise ValueError(
                "counts a change with `offset`, which goes negative when a service restarts; "
                "use increase(metric[{window}]) (or resets()) instead"
            )
        return query


_OFFSET = re.compile(r"\boffset\b")


class LogsCheck(_Spec):
    kind: Literal["logs"] = "logs"
    service: str
    match: dict[str, Any]  # field -> expected value (event, reason, ...)
    window: str = "drill"
    op: Comparison = ">="
    count: float = 1
    # What is measured (grader.checks.logs):
    #   count        events matching `match` (between the bounds, when `until` is given);
    #   interval_s   seconds from the `after` event to the `until` event;
    #   per_request  for each request of `generator` answered with `statuses`, the `match`
    #                events with its request_id; the count farthest from the expected one is
    #                the observation (so every request must meet it);
    #   most_between the `match` events between each `after` event and the first `until`
    #                event that follows it (the window's end when none does), counted for
    #                every such stretch; the largest count is the observation.
    measure: Literal["count", "interval_s", "per_request", "most_between"] = "count"
    # Bounds within the window: `until` is the first event matching it (after the first `after`
    # event when `after` is given); counting starts at the last `after` event before it.
    after: dict[str, Any] | None = None
    until: dict[str, Any] | None = None
    bounds_service: str | None = None  # where `after` and `until` are looked for
    # Place each counted event at the moment its request *started* (timestamp - duration_ms),
    # so a request that began inside the bounds counts even if it was logged after them.
    timed_by: Literal["end", "start"] = "end"
    # per_request: the requests a traffic generator got `statuses` for (their X-Request-ID);
    # each is looked for among the `match` events of `service` (the upstream) by request_id.
    generator: str | None = None
    statuses: list[int] = []
    # Optional order: the first matching event must come before the first event matching this.
    before: dict[str, Any] | None = None
    # Where the `before` events are looked for (default: `service`), e.g. the gateway's breaker
    # opening before the order service logs fault_cleared.
    before_service: str | None = None


class TrafficCheck(_Spec):
    kind: Literal["traffic"] = "traffic"
    generator: str
    metric: Literal[
        "share_status",  # share of responses with status in `statuses`
        "count_status",  # number of responses with status in `statuses`
        "p99_latency_ms",  # p99 latency of responses with status in `statuses` (all if empty)
        "availability",  # share of non-5xx responses
        "time_to_detect_s",  # first `statuses` response after the phase started
        "time_to_recover_s",  # first run of successes after the phase ended
        "max_5xx",  # number of 5xx responses
        # Longest Retry-After (seconds) of the `statuses` responses: how long a block or
        # throttle says it lasts (a 403 sent a moment after a 300 s block began says ~300).
        "max_retry_after_s",
        # Requests the limiter let through (every answer but 429) against the GCRA envelope
        # limit + limit / window x elapsed: 0 within it, else the distance to the bound crossed
        # (more than that over the run, or fewer before the first 429); `uses` names the two.
        "admitted_over_envelope",
        "min_latency_s",  # fastest response with status in `statuses` (s)
        "max_latency_s",  # slowest response with status in `statuses` (s)
        # Answers a circuit breaker with the configured rules would not have given, replaying
        # the calls in order (grader.checks.breaker_model); `statuses` are the upstream's
        # failures (default 5xx but 503), 503 is the open breaker.
        "breaker_mismatches",
    ]
    # The settings a metric computes with, by role: admitted_over_envelope needs `limit` and
    # `window`; breaker_mismatches `failure_rate`, `window`, `min_calls`,
    # `consecutive_failures`, `half_open_calls` and `open_seconds` (each "service.field").
    uses: dict[str, str] = {}
    statuses: list[int] = []
    window: str = "drill"
    op: Comparison
    value: float = None  # type: ignore[assignment]  # required unless `setting` gives it

    _value_or_setting = model_validator(mode="after")(lambda self: _needs_value(self))


class InvariantCheck(_Spec):
    kind: Literal["invariant"] = "invariant"
    account: str  # an account the scenario created (RunContext.accounts)
    rule: Literal[
        "balance_non_negative",
        "holdings_non_negative",
        "ledger_equals_balance",
        "trades_equal_holdings",
        "orders_completed",  # number of completed orders `op` value
        "balance_equals",
    ]
    asset_id: str | None = None
    op: Comparison = "=="
    value: float | None = None
    # Compare with a number only known after the run (a traffic generator's stat such as
    # "orders.succeeded_keys"); the engine copies it into `value` before grading.
    value_from: str | None = None


CheckSpec = Annotated[
    PromQLCheck | LogsCheck | TrafficCheck | InvariantCheck, Field(discriminator="kind")
]


class Observation(BaseModel):
    """One response a traffic generator saw."""

    generator: str
    t: float  # epoch seconds when the request was sent
    status: int  # 0 for a transport error or client-side timeout
    latency_s: float
    route: str = ""
    error: str | None = None
    headers: dict[str, str] = {}  # only the interesting ones (Retry-After, RateLimit-*)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def request_id(self) -> str | None:
        """The X-Request-ID the platform answered with: the key to its logs of this request."""
        return self.header("X-Request-ID")


class Account(BaseModel):
    username: str
    password: str
    token: str | None = None


class Phase(BaseModel):
    name: str
    start: datetime
    end: datetime
    about: str = ""  # what the phase measures, from the scenario's `phases:` (schema 1.2)


class LogSource(Protocol):
    """What the grader needs of a runtime: the services' JSON log events since a moment."""

    def log_events(self, name: str, since: datetime | None = None) -> Any: ...


class RunContext(BaseModel):
    """Everything a check may look at; built by the engine after the method ran."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    prometheus_url: str
    gateway_url: str
    phases: dict[str, Phase]  # always contains "drill" (whole method)
    traffic: dict[str, list[Observation]] = {}
    accounts: dict[str, Account] = {}
    params: dict[str, Any] = {}
    logs: Any = None  # a LogSource (the runtime)


class CheckResult(BaseModel):
    id: str
    title: str
    kind: str
    passed: bool
    points: int  # awarded
    max_points: int
    required: bool
    guards: str | None = None
    hint: str = ""  # shown when failed
    evidence: dict[str, Any] = {}  # query, window, samples, counts, ...
    error: str | None = None  # the check could not be evaluated (counts as failed)
    # What the check read (queries and answers, API reads, log events, traffic records), so it
    # can be graded again from the run alone (grader.evidence; schema 1.1, None before).
    raw: dict[str, Any] | None = None


class SeriesPoint(BaseModel):
    t: float
    v: float


class Chart(BaseModel):
    """A key series over the drill, for the HTML report (fault windows shaded)."""

    title: str
    unit: str = ""
    series: dict[str, list[SeriesPoint]]  # legend -> points
    shaded: list[str] = []  # phase names to shade
    # Names for values on the y axis, e.g. a breaker's {"0": "closed", "1": "open"} (schema 1.2).
    value_names: dict[str, str] = {}


class TimelineEvent(BaseModel):
    """One log event of one service (or one response a drill client saw, lane "client")."""

    t: float  # epoch seconds it was logged; a request's is when it was answered
    service: str
    event: str  # "request" (a service's answer), "response" (a client's), or a named event
    request_id: str | None = None
    duration_s: float | None = None  # requests and responses: how long they took
    status: int | None = None
    detail: str = ""  # a request's method and path, a named event's key fields
    trace: int | None = None  # the trace (request id) it belongs to, numbered in time order


class Timeline(BaseModel):
    """The drill across services, joined on request id (grader.timeline; schema 1.2)."""

    events: list[TimelineEvent] = []
    traces: dict[int, str] = {}  # trace number -> "POST /api/v1/orders → 422"
    request_ids: dict[int, str] = {}  # trace number -> request id
    counts: dict[str, dict[str, int]] = {}  # lane -> event -> how many in the drill (all kept)
    traces_total: int = 0  # request ids seen; those not in `traces` were left out


class Provenance(BaseModel):
    """Who ran what, where and how (schema 1.1): what an instructor needs to grade a run later."""

    student: str | None = None
    host: str = ""
    os: str = ""
    python: str = ""
    lab_version: str = ""
    git_commit: str | None = None  # None outside a git checkout
    git_dirty: bool | None = None
    scenario_file: str = ""
    scenario_sha256: str | None = None
    # CNOP_* service settings in force that differ from the defaults: service (or "all" for
    # what every service got) -> settings. Empty: the platform ran with its hardened defaults.
    settings: dict[str, dict[str, str]] = {}
    # Flaws of security/flaws.yaml switched on (their settings are in `settings` too).
    flaws: list[str] = []
    # CNOP_LAB_* settings given explicitly (secrets left out).
    lab_settings: dict[str, Any] = {}
    assignment: dict[str, str] | None = None  # name, key_id: the run was made for it
    # Hints of this drill's lab the student had opened before the run (`lab hint`): lab,
    # scenario, hint (number), title, revealed_at. An assignment may charge for each.
    hints: list[dict[str, Any]] = []
    # The challenge the platform ran under (`lab up --assignment`): the assignment and its
    # sealed hidden settings (a token only the assignment's key opens), never the settings.
    challenge: dict[str, Any] | None = None


class RunResult(BaseModel):
    schema_version: str = RESULT_SCHEMA_VERSION
    scenario: str
    title: str
    description: str = ""
    seed: int
    params: dict[str, Any]
    runtime: str
    started_at: datetime
    finished_at: datetime
    duration_s: float
    phases: list[Phase]
    steady_state: dict[str, Any] = {}  # before/after probe outcomes
    checks: list[CheckResult]
    charts: list[Chart] = []
    score: int
    max_score: int
    passed: bool  # every required check passed (and steady state held)
    errors: list[str] = []  # method or rollback problems
    # Per traffic generator: requests, by_status, availability, p50/p99 (ms), plus what the
    # generators learned (e.g. "orders.succeeded_keys"); added by the scenario engine.
    traffic: dict[str, Any] = {}
    # hardened: every service on its shipped settings; weakened: exactly the scenario's `weaken`
    # settings (selftest); custom: any other override (CNOP_LAB_SERVICE_ENV, a reconfigure).
    mode: Literal["hardened", "weakened", "custom"] = "hardened"
    # The CNOP_* settings each service ran with beyond its defaults when the run began.
    settings: dict[str, dict[str, str]] = {}
    # The flaws (security/flaws.yaml) on when the run began; any flaw makes the mode "custom".
    flaws: list[str] = []
    provenance: Provenance | None = None  # schema 1.1
    # HMAC over the provenance and every check's raw evidence, with the assignment's key
    # (grader.bundles.seal_result); set only for runs made with `--assignment`.
    seal: dict[str, str] | None = None
    # Drill client address (as the scenario names it) -> the address the gateway saw it as.
    client_addresses: dict[str, str] = {}
    teaches: str = ""  # the scenario's `teaches:` text (schema 1.2)
    # The sandbox's Prometheus as the run saw it, for links to its graph page (schema 1.2).
    prometheus_url: str = ""
    timeline: Timeline | None = None  # schema 1.2
    # A security scan (schema 1.2): what every engine found, and how the engines ran (engine,
    # version, duration, operations, report files).
    findings: list[Finding] = []
    scan: dict[str, Any] | None = None

    @field_validator("schema_version")
    @classmethod
    def _readable(cls, value: str) -> str:
        major = RESULT_SCHEMA_VERSION.split(".")[0]
        if value.split(".")[0] != major:
            raise ValueError(f"result schema {value} is not readable (this lab reads {major}.x)")
        return value

    @property
    def mode_label(self) -> str:
        return MODE_LABELS[self.mode]


MODE_LABELS = {"hardened": "hardened", "weakened": "weakened", "custom": "weakened (custom)"}


def effective_mode(
    requested: Literal["hardened", "weakened"],
    in_force: Mapping[str, Mapping[str, str]],
    expected: Mapping[str, Mapping[str, str]] | None = None,
) -> Literal["hardened", "weakened", "custom"]:
    """The mode a run may claim: the requested one only when the settings in force are exactly
    what that mode expects (none for hardened, the `weaken` overlay for weakened)."""
    wanted = {s: {k: str(v) for k, v in env.items()} for s, env in (expected or {}).items() if env}
    return requested if in_force == wanted else "custom"
