"""The data the scenario engine hands the grader, and what the grader gives back.

This module is the seam between ``scenarios`` (which runs drills) and ``grader`` (which judges
them): check *specs* are data parsed from scenario YAML, a :class:`RunContext` is everything a
check may look at, and :class:`CheckResult` / :class:`RunResult` are what reports render.
``RunResult`` is serialised as ``result.json`` (``schema_version`` below).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

RESULT_SCHEMA_VERSION = "1.0"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,60}$")
    title: str
    points: int = Field(default=1, ge=0)
    required: bool = True
    hint: str = ""
    # Which protection the check guards; `lab selftest` expects it to fail when that is off.
    guards: str | None = None


Comparison = Literal["<", "<=", "==", "!=", ">=", ">"]


class PromQLCheck(_Spec):
    kind: Literal["promql"] = "promql"
    query: str  # may use {window} (e.g. "45s") and {param} placeholders
    window: str = "drill"  # a phase name ("drill", "fault", "recovery", ...)
    mode: Literal["instant", "range"] = "instant"
    reduce: Literal["sum", "max", "min", "last", "count"] = "sum"  # over series (and samples)
    op: Comparison
    value: float


class LogsCheck(_Spec):
    kind: Literal["logs"] = "logs"
    service: str
    match: dict[str, Any]  # field -> expected value (event, reason, ...)
    window: str = "drill"
    op: Comparison = ">="
    count: int = 1
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
    ]
    statuses: list[int] = []
    window: str = "drill"
    op: Comparison
    value: float


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


class Account(BaseModel):
    username: str
    password: str
    token: str | None = None


class Phase(BaseModel):
    name: str
    start: datetime
    end: datetime


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


class SeriesPoint(BaseModel):
    t: float
    v: float


class Chart(BaseModel):
    """A key series over the drill, for the HTML report (fault windows shaded)."""

    title: str
    unit: str = ""
    series: dict[str, list[SeriesPoint]]  # legend -> points
    shaded: list[str] = []  # phase names to shade


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
    mode: Literal["hardened", "weakened"] = "hardened"
    # Drill client address (as the scenario names it) -> the address the gateway saw it as.
    client_addresses: dict[str, str] = {}
