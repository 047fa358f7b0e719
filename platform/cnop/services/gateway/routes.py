"""The gateway's route table, kept as data so a route is added by adding a row, not code.

Each row is a public template under ``/api/v1``; the upstream path is the same template without
the prefix. Matching is segment by segment: a ``{param}`` matches one non-empty segment that is
not ``.`` or ``..``, so a crafted path can never climb to an upstream route the table lacks.

Paths travel raw. The gateway splits the path *as received* (percent-encoded) into segments,
decodes each one once to match it, and forwards the received segments unchanged (prefix
stripped), so the upstream decodes exactly once too: ``%2541`` arrives as ``%2541`` (the id
``%41``), never as ``A``. A segment that decodes to something containing ``/`` (``%2F``) matches
nothing: an encoded slash can never become a new segment upstream.

``idempotent`` marks the rows whose POST honours ``Idempotency-Key`` (the backend replays a
retried request's first result): only those POSTs may be retried by the gateway, and only when
they carry a key. Retrying any other POST could run it twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from starlette.types import Scope

API_PREFIX = "/api/v1"
UPSTREAMS = ("user", "inventory", "order", "insights")

_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    path: str  # public template without the prefix, e.g. "/orders/{order_id}"
    upstream: str
    auth: bool = True
    idempotent: bool = False  # its POST honours Idempotency-Key, so a keyed POST may be retried
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.upstream not in UPSTREAMS:
            raise ValueError(f"unknown upstream {self.upstream!r} for {self.path}")
        regex = _PARAM.sub(lambda m: f"(?P<{m.group(1)}>[^/]+)", self.path)
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    @property
    def template(self) -> str:
        """The label metrics use: bounded, never the raw path."""
        return API_PREFIX + self.path


def route(
    methods: str, path: str, upstream: str, *, auth: bool = True, idempotent: bool = False
) -> Route:
    return Route(frozenset(methods.split(",")), path, upstream, auth, idempotent)


ROUTES: tuple[Route, ...] = (
    route("POST", "/auth/register", "user", auth=False),
    route("POST", "/auth/login", "user", auth=False),
    route("GET,PUT", "/auth/profile", "user"),
    route("POST", "/auth/logout", "user"),
    route("GET", "/balance", "user"),
    route("POST", "/balance/deposit", "user", idempotent=True),
    route("POST", "/balance/withdraw", "user", idempotent=True),
    route("GET", "/balance/transactions", "user"),
    route("GET", "/balance/asset/{asset_id}", "user"),
    route("GET", "/portfolio", "user"),
    route("POST", "/cny/claim", "user"),
    route("GET", "/inventory/assets", "inventory", auth=False),
    route("GET", "/inventory/assets/{asset_id}", "inventory", auth=False),
    route("GET,POST", "/orders", "order", idempotent=True),
    route("GET", "/orders/{order_id}", "order"),
    route("GET", "/assets/{asset_id}/transactions", "order"),
    route("GET", "/insights/portfolio", "insights"),
)

LOGIN_PATH = "/auth/login"


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    upstream_path: str  # the path as received (percent-encoded), without the prefix


@dataclass(frozen=True)
class WrongMethod:
    template: str
    allowed: frozenset[str]


# Bytes a path may carry as they are (RFC 3986 pchar, "/" and "%" of existing escapes): any
# other byte is percent-encoded, which the upstream client then sends unchanged.
_PATH_SAFE = "/!$&'()*+,;=:@%"
_PREFIX_SEGMENTS = API_PREFIX.strip("/").split("/")


def raw_path(scope: Scope) -> str:
    """The request's path as the client sent it (percent-encoded, no query string)."""
    raw = scope.get("raw_path")
    if raw is None:  # optional in ASGI: re-encode the decoded path (its "%" included)
        return quote(scope["path"], safe=_PATH_SAFE.replace("%", ""))
    return quote(raw, safe=_PATH_SAFE)


def match(
    method: str, path: str, routes: tuple[Route, ...] = ROUTES
) -> RouteMatch | WrongMethod | None:
    """Find the row for ``method path`` (``path`` as received, percent-encoded); ``None`` for
    unknown paths (404)."""
    received = path.split("/")
    decoded = [unquote(segment) for segment in received]
    if received[0] != "" or decoded[1 : 1 + len(_PREFIX_SEGMENTS)] != _PREFIX_SEGMENTS:
        return None
    start = 1 + len(_PREFIX_SEGMENTS)
    if len(decoded) <= start:
        return None
    if any(seg in (".", "..") or "/" in seg for seg in decoded[start:]):
        return None
    rest = "/" + "/".join(decoded[start:])
    upstream_path = "/" + "/".join(received[start:])
    allowed: set[str] = set()
    template = ""
    for candidate in routes:
        if candidate.pattern.fullmatch(rest):
            if method in candidate.methods:
                return RouteMatch(candidate, upstream_path)
            allowed |= candidate.methods
            template = template or candidate.template
    if allowed:
        return WrongMethod(template, frozenset(allowed))
    return None
