"""Evaluate a scenario's checks against a finished run; a check never crashes the run.

A check that cannot be evaluated (Prometheus down, an unknown phase, an account that cannot log
in) fails with ``error`` set, so a report always comes out and says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from grader.checks import invariant, logs, promql, traffic
from grader.checks.common import CheckEnv, CheckError
from grader.model import CheckResult, CheckSpec, RunContext

_EVALUATORS: dict[str, Callable[[Any, CheckEnv], tuple[bool, dict[str, Any]]]] = {
    "promql": promql.evaluate,
    "logs": logs.evaluate,
    "traffic": traffic.evaluate,
    "invariant": invariant.evaluate,
}


def _result(spec: CheckSpec, passed: bool, evidence: dict[str, Any], error: str | None):
    return CheckResult(
        id=spec.id,
        title=spec.title,
        kind=spec.kind,
        passed=passed,
        points=spec.points if passed else 0,
        max_points=spec.points,
        required=spec.required,
        guards=spec.guards,
        hint=spec.hint,
        evidence=evidence,
        error=error,
    )


def evaluate_with(spec: CheckSpec, env: CheckEnv) -> CheckResult:
    """One check with the clients of ``env`` (shared by the checks of a run)."""
    try:
        passed, evidence = _EVALUATORS[spec.kind](spec, env)
    except CheckError as exc:
        return _result(spec, False, {}, str(exc))
    except Exception as exc:  # a check must never crash the run
        return _result(spec, False, {}, f"{type(exc).__name__}: {exc}")
    return _result(spec, passed, evidence, None)


def evaluate(spec: CheckSpec, ctx: RunContext) -> CheckResult:
    with CheckEnv(ctx) as env:
        return evaluate_with(spec, env)


def evaluate_all(specs: Iterable[CheckSpec], ctx: RunContext) -> list[CheckResult]:
    """Every check in order, sharing one Prometheus client, one HTTP client and logins."""
    with CheckEnv(ctx) as env:
        return [evaluate_with(spec, env) for spec in specs]
