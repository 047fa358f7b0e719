"""`lab bench`: what the gateway, and each protection in it, costs, measured side by side.

One run measures a route straight to its service (as the operator: with the platform's internal
credential) and through the gateway, then through the gateway again with one protection
switched off at a time. Everything in one run, on one machine, so the ratios mean something even
where the absolute numbers do not.

The load generator must not be the bottleneck: wrk (compiled, event-driven) is used where it is
installed; otherwise a Python client runs, and the report says so, since it saturates a core
well before a service does. The gateway's rate limits are lifted for the run (the limiter still
runs its Redis script on every request: that cost stays in the numbers), because all of the
load comes from one address and one user; the gateway goes back to its defaults afterwards.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from scenarios.accounts import registration_body
from scenarios.runtime.base import SERVICES, Runtime, RuntimeError_

# What `--route` names: a path on the gateway (under /api/v1) and the service that answers it.
ROUTES: dict[str, tuple[str, str, bool]] = {
    "public": ("inventory", "/inventory/assets/BTC", False),
    "auth": ("user", "/balance", True),
    "order": ("order", "/orders", True),
}
# What `--protection NAME=off` switches off, as settings of the services concerned.
PROTECTIONS: dict[str, dict[str, dict[str, str]]] = {
    "limiter": {"gateway": {"CNOP_RATE_LIMIT_ENABLED": "false"}},
    "breaker": {"gateway": {"CNOP_BREAKER_ENABLED": "false"}},
    "revocation": {name: {"CNOP_TOKEN_REVOCATION_ENABLED": "false"} for name in SERVICES},
    "internal-auth": {name: {"CNOP_INTERNAL_AUTH_ENABLED": "false"} for name in SERVICES},
}
# Limits lifted for the run: every request comes from one address and one user.
LIFTED_LIMITS = {
    "CNOP_RATE_LIMIT_IP_LIMIT": "100000000",
    "CNOP_RATE_LIMIT_USER_LIMIT": "100000000",
    "CNOP_RATE_LIMIT_USER_INFLIGHT": "100000",
}
API_PREFIX = "/api/v1"


@dataclass(frozen=True)
class Load:
    """One measured path."""

    path: str  # "direct", "gateway", "gateway, limiter off"...
    url: str
    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.non_2xx <= self.requests * 0.01


@dataclass
class BenchResult:
    route: str
    service: str
    seconds: float
    connections: int
    tool: str
    warmup: float = 0
    rows: list[Load] = field(default_factory=list)

    @property
    def direct(self) -> Load:
        return self.rows[0]

    def ratio(self, row: Load) -> float:
        return row.rps / self.direct.rps if self.direct.rps else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "service": self.service,
            "seconds": self.seconds,
            "warmup_seconds": self.warmup,
            "connections": self.connections,
            "tool": self.tool,
            "rows": [{**asdict(r), "ratio": round(self.ratio(r), 3)} for r in self.rows],
        }


def parse_protections(specs: Sequence[str]) -> list[str]:
    """``["limiter=off", "breaker=off"]`` -> ``["limiter", "breaker"]``; ValueError otherwise."""
    names = []
    for spec in specs:
        name, _, state = spec.partition("=")
        if name not in PROTECTIONS or state != "off":
            known = ", ".join(f"{n}=off" for n in PROTECTIONS)
            raise ValueError(f"--protection {spec!r}: one of {known}")
        names.append(name)
    return list(dict.fromkeys(names))


def load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "python"


# ---------------------------------------------------------------------------------------- wrk
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output: str) -> dict[str, float]:
    """Requests, seconds, p50/p99 and non-2xx from ``wrk --latency`` output."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if done is None:
        raise ValueError(f"wrk printed no totals: {output.strip()[-200:]}")
    percentiles = dict(re.findall(r"^\s*(50|99)(?:\.000)?%\s+(\S+)", output, re.MULTILINE))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    requests = int(done[1])
    seconds = _ms(done[2] + done[3]) / 1000
    return {
        "requests": requests,
        "seconds": seconds,
        "rps": requests / seconds if seconds else 0.0,
        "p50_ms": _ms(percentiles["50"]) if "50" in percentiles else 0.0,
        "p99_ms": _ms(percentiles["99"]) if "99" in percentiles else 0.0,
        "non_2xx": (int(bad[1]) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0),
    }


def run_wrk(url: str, headers: Mapping[str, str], seconds: float, connections: int) -> dict:
    threads = max(1, min(2, connections))
    argv = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    done = subprocess.run(  # noqa: S603 - argv built here, no shell
        [*argv, url], capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError_(f"wrk failed: {(done.stderr or done.stdout).strip()[-200:]}")
    return parse_wrk(done.stdout)


# ------------------------------------------------------------------------------ python client
async def _python_load(
    url: str, headers: Mapping[str, str], seconds: float, connections: int
) -> dict:
    latencies: list[float] = []
    bad = 0
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal bad
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                answer = await client.get(url)
                ok = answer.status_code < 400
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            bad += 0 if ok else 1

    limits = httpx.Limits(max_connections=connections)
    started = time.perf_counter()
    async with httpx.AsyncClient(headers=dict(headers), limits=limits, timeout=10) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000 if latencies else 0.0,
        "non_2xx": bad,
    }


def _load(
    url: str, headers: Mapping[str, str], seconds: float, connections: int, tool: str
) -> dict[str, Any]:
    if tool == "wrk":
        return run_wrk(url, headers, seconds, connections)
    return asyncio.run(_python_load(url, headers, seconds, connections))


def measure(
    path: str,
    url: str,
    headers: Mapping[str, str],
    seconds: float,
    connections: int,
    tool: str,
    warmup: float = 0,
) -> Load:
    """``warmup`` seconds of the same load first, not counted: a path measured right after a
    (re)start is slower for its first seconds (fresh connections and pools, caches filling, a
    Prometheus still compacting), and which path comes first would decide the ratio."""
    if warmup > 0:
        _load(url, headers, warmup, connections, tool)
    numbers = _load(url, headers, seconds, connections, tool)
    return Load(path=path, url=url, tool=tool, **numbers)


# ------------------------------------------------------------------------------------ the run
def bench_user(gateway: str) -> dict[str, str]:
    """A fresh account of the bench's own, and the Authorization header of its token."""
    suffix = secrets.token_hex(4)
    username, password = f"bench_{suffix}", f"Bench-{suffix}-pw1"
    body = registration_body(username, password, first_name="Bench", last_name="Mark")
    with httpx.Client(base_url=gateway, timeout=15) as client:
        created = client.post(f"{API_PREFIX}/auth/register", json=body)
        if created.status_code != 201:
            raise RuntimeError_(f"could not register the bench user: {created.status_code}")
        login = client.post(
            f"{API_PREFIX}/auth/login", json={"username": username, "password": password}
        )
        if login.status_code != 200:
            raise RuntimeError_(f"could not log the bench user in: {login.status_code}")
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def _configure(runtime: Runtime, envs: Mapping[str, Mapping[str, str] | None]) -> None:
    runtime.reconfigure_many(envs)


def run_bench(
    runtime: Runtime,
    *,
    route: str,
    seconds: float,
    connections: int,
    warmup: float = 0,
    protections_off: Sequence[str] = (),
    say: Callable[[str], None] = lambda _line: None,
) -> BenchResult:
    if route not in ROUTES:
        raise ValueError(f"--route {route!r}: one of {', '.join(ROUTES)}")
    service, path, needs_token = ROUTES[route]
    endpoints = runtime.endpoints()
    direct_base = endpoints.services.get(service)
    if not direct_base:
        raise RuntimeError_(
            f"the {runtime.name} runtime does not publish the {service} service to this host, "
            "so there is nothing to compare the gateway with; use --runtime local"
        )
    tool = load_tool()
    result = BenchResult(route, service, seconds, connections, tool, warmup)
    touched: set[str] = {"gateway"}
    try:
        say("gateway: rate limits lifted for the run (the limiter still runs)")
        runtime.reconfigure("gateway", LIFTED_LIMITS)
        token = bench_user(endpoints.gateway) if needs_token else {}
        direct_headers = {**token, **runtime.internal_headers()}
        gateway_url = f"{endpoints.gateway}{API_PREFIX}{path}"
        say(f"direct: {direct_base}{path} ({seconds:.0f} s, {connections} connections, {tool})")
        result.rows.append(
            measure(
                "direct", f"{direct_base}{path}", direct_headers, seconds, connections, tool, warmup
            )
        )
        say(f"gateway: {gateway_url}")
        result.rows.append(
            measure("gateway", gateway_url, token, seconds, connections, tool, warmup)
        )
        for name in protections_off:
            envs = PROTECTIONS[name]
            touched.update(envs)
            say(f"gateway, {name} off: {', '.join(sorted(envs))} reconfigured")
            lifted = {svc: LIFTED_LIMITS if svc == "gateway" else {} for svc in envs}
            _configure(runtime, {svc: {**lifted[svc], **env} for svc, env in envs.items()})
            result.rows.append(
                measure(
                    f"gateway, {name} off", gateway_url, token, seconds, connections, tool, warmup
                )
            )
            _configure(runtime, {svc: LIFTED_LIMITS if svc == "gateway" else None for svc in envs})
    finally:
        say(f"back to defaults: {', '.join(sorted(touched))}")
        _configure(runtime, dict.fromkeys(sorted(touched)))
    return result
