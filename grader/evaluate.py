"""Evaluate a scenario's checks against a finished run; a check never crashes the run.

A check that cannot be evaluated (Prometheus down, an unknown phase, an account that cannot log
in) fails with ``error`` set, so a report always comes out and says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from grader.checks import invariant, logs, promql, traffic
from grader.checks.common import CheckEnv, CheckError, plain, read_setting
from grader.evidence import recording_env, replay_env, tape_evidence
from grader.model import CheckResult, CheckSpec, InvariantCheck, LogsCheck, RunContext

_EVALUATORS: dict[str, Callable[[Any, CheckEnv], tuple[bool, dict[str, Any]]]] = {
    "promql": promql.evaluate,
    "logs": logs.evaluate,
    "traffic": traffic.evaluate,
    "invariant": invariant.evaluate,
}


def _result(
    spec: CheckSpec,
    passed: bool,
    evidence: dict[str, Any],
    error: str | None,
    raw: dict[str, Any] | None = None,
) -> CheckResult:
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
        raw=raw,
    )


def resolve_setting(spec: CheckSpec, env: CheckEnv) -> tuple[CheckSpec, dict[str, Any]]:
    """A check whose expected value is a configured number: read it (as of the end of the
    check's window) and put it where the evaluator looks (``value``, or ``count`` for logs)."""
    if spec.setting is None:
        return spec, {}
    phase = env.ctx.phases.get(getattr(spec, "window", "drill"))
    configured = read_setting(env, spec.setting, phase.end if phase else None)
    expected = configured + spec.setting_offset
    field = "count" if isinstance(spec, LogsCheck) else "value"
    shown = f"{spec.setting} = {plain(configured)}"
    if spec.setting_offset:
        shown += f" {'+' if spec.setting_offset > 0 else '-'} {plain(abs(spec.setting_offset))}"
    return spec.model_copy(update={field: expected}), {"expected_from": shown}


def _judge(spec: CheckSpec, env: CheckEnv) -> tuple[bool, dict[str, Any], str | None]:
    try:
        spec, configured = resolve_setting(spec, env)
        passed, evidence = _EVALUATORS[spec.kind](spec, env)
    except CheckError as exc:
        return False, {}, str(exc)
    except Exception as exc:  # a check must never crash the run
        return False, {}, f"{type(exc).__name__}: {exc}"
    return passed, {**configured, **evidence}, None


def evaluate_with(spec: CheckSpec, env: CheckEnv) -> CheckResult:
    """One check with the clients of ``env`` (shared by the checks of a run); what it read is
    kept raw in ``CheckResult.raw``."""
    recorded, tape = recording_env(env)
    passed, evidence, error = _judge(spec, recorded)
    return _result(spec, passed, evidence, error, tape_evidence(spec, recorded, tape))


def resolve_value_from(spec: CheckSpec, stats: dict[str, Any]) -> CheckSpec:
    """An invariant's ``value_from`` (a number the traffic learned) copied into ``value``."""
    if isinstance(spec, InvariantCheck) and spec.value_from:
        value = stats.get(spec.value_from)
        number = float(value) if isinstance(value, int | float) else None
        return spec.model_copy(update={"value": number})
    return spec


def reevaluate(spec: CheckSpec, evidence: dict[str, Any] | None) -> CheckResult:
    """The check graded again from a run's stored raw evidence alone (no network): the same
    evaluator as the live run, on sources that answer from the tape. A pure function."""
    stored = evidence if isinstance(evidence, dict) else None
    try:
        env = replay_env(stored)
    except CheckError as exc:
        return _result(spec, False, {}, str(exc), stored)
    except Exception as exc:  # malformed evidence fails the check, never the grading
        return _result(spec, False, {}, f"malformed evidence: {type(exc).__name__}", stored)
    spec = resolve_value_from(spec, env.ctx.params)
    passed, found, error = _judge(spec, env)
    return _result(spec, passed, found, error, stored)


def evaluate(spec: CheckSpec, ctx: RunContext) -> CheckResult:
    with CheckEnv(ctx) as env:
        return evaluate_with(spec, env)


def evaluate_all(specs: Iterable[CheckSpec], ctx: RunContext) -> list[CheckResult]:
    """Every check in order, sharing one Prometheus client, one HTTP client and logins."""
    with CheckEnv(ctx) as env:
        return [evaluate_with(spec, env) for spec in specs]
