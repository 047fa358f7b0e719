"""What every check evaluator shares: the comparison, phase windows and the tools a run lends."""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from grader.model import Comparison, Phase, RunContext
from grader.prometheus import Prometheus, to_epoch

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    ">": operator.gt,
}

MAX_EVIDENCE_VALUES = 50


class CheckError(Exception):
    """The check cannot be evaluated (bad spec, missing data source); the message is for a
    student, so it names what is missing."""


def compare(
    observed: float | Decimal | None,
    op: Comparison,
    expected: float | Decimal,
    tolerance: float = 0,
) -> bool:
    """``observed op expected``, allowing ``tolerance`` on the side the comparison is strict
    about (``==`` within +- tolerance); no observation (None, NaN) never passes."""
    if observed is None:
        return False
    if isinstance(observed, Decimal) and not isinstance(expected, Decimal):
        expected = Decimal(str(expected))
    if isinstance(observed, float) and math.isnan(observed):
        return False
    if tolerance:
        slack = Decimal(str(tolerance)) if isinstance(observed, Decimal) else tolerance
        if op == "==":
            return abs(observed - expected) <= slack  # type: ignore[operator]
        if op == "!=":
            return abs(observed - expected) > slack  # type: ignore[operator]
        if op in ("<", "<="):
            return OPS[op](observed, expected + slack)  # type: ignore[operator]
        return OPS[op](observed, expected - slack)  # type: ignore[operator]
    return OPS[op](observed, expected)


def comparison_evidence(
    observed: float | Decimal | None,
    op: Comparison,
    expected: float | Decimal,
    passed: bool,
    tolerance: float = 0,
) -> dict[str, Any]:
    shown = "no data" if observed is None else plain(observed)
    verdict = "holds" if passed else "does not hold"
    within = f" (+- {plain(tolerance)})" if tolerance else ""
    evidence = {
        "observed": plain(observed),
        "op": op,
        "expected": plain(expected),
        "comparison": f"{shown} {op} {plain(expected)}{within}: {verdict}",
    }
    if tolerance:
        evidence["tolerance"] = plain(tolerance)
    return evidence


SETTING_METRIC = "cnop_setting"


def read_setting(env: CheckEnv, setting: str, at: datetime | float | None = None) -> float:
    """The configured value of ``service.field`` as the platform exports it (``cnop_setting``),
    at ``at``: an operator's reading, never the platform's code."""
    service, _, name = setting.partition(".")
    query = f'max({SETTING_METRIC}{{service="{service}",name="{name}"}})'
    samples = env.prom.query(query, at=at)
    values = [s.v for s in samples if not math.isnan(s.v)]
    if not values:
        raise CheckError(
            f"the platform exports no setting {setting} ({SETTING_METRIC}); "
            "is the service running and scraped?"
        )
    return values[0]


def plain(value: Any) -> Any:
    """JSON-friendly, readable numbers: Decimals stay exact as strings, floats are rounded."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return int(value)
        return float(f"{value:.4g}")  # 7.182 ms, 0.2948 s: what a student needs
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def phase_of(ctx: RunContext, name: str) -> Phase:
    try:
        return ctx.phases[name]
    except KeyError:
        known = ", ".join(sorted(ctx.phases)) or "none"
        raise CheckError(f"the run has no phase {name!r} (phases: {known})") from None


def window_evidence(phase: Phase) -> dict[str, Any]:
    return {
        "phase": phase.name,
        "start": phase.start.isoformat(),
        "end": phase.end.isoformat(),
        "duration_s": round(to_epoch(phase.end) - to_epoch(phase.start), 3),
    }


@dataclass
class CheckEnv:
    """Clients shared by the checks of one run, opened lazily and closed once."""

    ctx: RunContext
    http_timeout: float = 10.0
    _prom: Prometheus | None = None
    _http: httpx.Client | None = None
    tokens: dict[str, str] = field(default_factory=dict)  # account name -> bearer token
    # How a check waits out a Retry-After; a replay of stored evidence does not wait.
    sleep: Callable[[float], None] = time.sleep

    @property
    def prom(self) -> Prometheus:
        if self._prom is None:
            self._prom = Prometheus(self.ctx.prometheus_url, timeout=self.http_timeout)
        return self._prom

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self.http_timeout)
        return self._http

    def close(self) -> None:
        if self._prom is not None:
            self._prom.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> CheckEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
