"""The schemathesis engine: every operation of the published API description, fuzzed.

Schemathesis runs as its own process (its command line, as a user would run it), so its
generator state never mixes with the lab's: ``schemathesis run`` on the gateway's
``/api/v1/openapi.json``, authenticated as the scan's owner (:mod:`._schemathesis_hooks`),
with deterministic generation (the same cases every run, whatever the seed: a grade must not
depend on luck; what varies is how far the time budget gets), with the phases of the profile
(``baseline``: the document's examples; ``api``: examples, boundary coverage, random fuzzing and
stateful sequences along the document's links; ``full``: the same with more examples). Its
NDJSON event report (and a JUnit one) stay in the run folder; :func:`findings_from_ndjson` turns
the failed checks in it into findings, one per (operation, check). Checks that only say "the
document could be more precise" are left out of the gate.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.findings import Finding, Risk, finding_id, level_for_risk
from scenarios.security.target import API, ScanError, ScanTarget

__all__ = ["CHECK_RULES", "PROFILES", "FuzzRun", "findings_from_ndjson", "run_schemathesis"]

NDJSON = "schemathesis.ndjson"
JUNIT = "schemathesis-junit.xml"


@dataclass(frozen=True)
class _Profile:
    phases: str
    max_examples: int
    max_time_s: int


PROFILES = {
    "baseline": _Profile("examples", 5, 120),
    "api": _Profile("examples,coverage,fuzzing,stateful", 10, 180),
    "full": _Profile("examples,coverage,fuzzing,stateful", 50, 900),
}


@dataclass(frozen=True)
class _Rule:
    title: str
    risk: Risk
    cwe: int
    owasp: str
    fix: str


# schemathesis check -> what a failure of it means here.
CHECK_RULES: dict[str, _Rule] = {
    "not_a_server_error": _Rule(
        "Client input produces a server error",
        "medium",
        755,
        "API8:2023",
        "Validate input at the edge and answer 4xx; no client input may produce a 5xx.",
    ),
    "ignored_auth": _Rule(
        "An operation that requires a token answers without one",
        "high",
        287,
        "API2:2023",
        "Check the token on every route the document marks as secured (gateway and backend).",
    ),
    "object_level_authorization": _Rule(
        "One user's object is reachable with another user's token",
        "high",
        639,
        "API1:2023",
        "Look objects up by owner and id; answer 404 for another user's object.",
    ),
    "use_after_free": _Rule(
        "A deleted resource is still served",
        "medium",
        672,
        "API1:2023",
        "Remove every way to reach a deleted resource.",
    ),
    "response_schema_conformance": _Rule(
        "A response body does not match the API description",
        "low",
        1059,
        "API9:2023",
        "Answer with the documented model, or document what is answered.",
    ),
    "status_code_conformance": _Rule(
        "An undocumented status code is answered",
        "low",
        1059,
        "API9:2023",
        "Document every status an operation answers (docs/openapi.json).",
    ),
    "content_type_conformance": _Rule(
        "An undocumented content type is answered",
        "low",
        1059,
        "API9:2023",
        "Document every media type an operation answers.",
    ),
    "response_headers_conformance": _Rule(
        "A documented response header is missing or malformed",
        "low",
        1059,
        "API9:2023",
        "Send the headers the document promises (Retry-After, RateLimit-*).",
    ),
    "negative_data_rejection": _Rule(
        "Input the description forbids is accepted",
        "low",
        20,
        "API8:2023",
        "Validate every field against the documented constraints (422 otherwise).",
    ),
    "positive_data_acceptance": _Rule(
        "Input the description allows is refused",
        "info",
        1059,
        "API9:2023",
        "Either accept what the document allows or narrow the document.",
    ),
    "missing_required_header": _Rule(
        "A required header may be left out",
        "low",
        20,
        "API8:2023",
        "Refuse requests without the headers the operation requires.",
    ),
    "unsupported_method": _Rule(
        "An undocumented method is served",
        "low",
        650,
        "API9:2023",
        "Answer 405 with Allow for methods an operation does not document.",
    ),
    "allow_header_conformance": _Rule(
        "A 405 answer lacks a correct Allow header",
        "info",
        1059,
        "API9:2023",
        "List the operation's methods in Allow on 405.",
    ),
    "ensure_resource_availability": _Rule(
        "A resource just created cannot be read back",
        "info",
        1059,
        "API9:2023",
        "Make a created resource readable at once, or document when it becomes so.",
    ),
    "max_response_time": _Rule(
        "An answer took longer than allowed",
        "info",
        400,
        "API4:2023",
        "Bound every operation's work.",
    ),
}
# What the hardened platform must pass (the fuzz suite's checks plus the security ones); the
# others run in `full` and are reported, but by their rule's risk rather than in the gate.
CHECKS_API = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance,ignored_auth,use_after_free"
)


@dataclass
class FuzzRun:
    findings: list[Finding] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    version: str = ""
    operations: dict[str, Any] = field(default_factory=dict)
    test_cases: int = 0
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("schemathesis")
    except Exception:  # the package metadata is optional here
        return ""


def command(
    target: ScanTarget, profile: str, seed: int, out_dir: Path, max_time_s: int | None = None
) -> list[str]:
    """The ``schemathesis run`` command line of one scan."""
    p = PROFILES[profile]
    checks = "all" if profile == "full" else CHECKS_API
    return [
        sys.executable, "-m", "schemathesis.cli", "run", target.openapi_url,
        "--url", target.gateway,
        "--phases", p.phases,
        "--checks", checks,
        "--max-examples", str(p.max_examples),
        "--max-time", str(max_time_s or p.max_time_s),
        "--seed", str(seed),
        "--generation-deterministic",
        "--no-shrink",
        "--suppress-health-check", "all",
        "--request-timeout", "10",
        "--rate-limit", "auto",
        "--workers", "1",
        "--report", "ndjson,junit",
        "--report-ndjson-path", str(out_dir / NDJSON),
        "--report-junit-path", str(out_dir / JUNIT),
        "--no-color",
    ]  # fmt: skip


def run_schemathesis(
    target: ScanTarget, profile: str, seed: int, out_dir: Path, max_time_s: int | None = None
) -> FuzzRun:
    """Run schemathesis against ``target``; its reports land in ``out_dir``."""
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "scenarios.security._schemathesis_hooks",
        "CNOP_SCAN_LOGIN_URL": f"{target.gateway}{API}/auth/login",
        "CNOP_SCAN_USERNAME": target.owner.username,
        "CNOP_SCAN_PASSWORD": target.owner.password,
        "CNOP_SCAN_LOGIN_SOURCE": target.sources.get("setup") or "",
    }
    started = time.monotonic()
    budget = (max_time_s or PROFILES[profile].max_time_s) + 120
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
            command(target, profile, seed, out_dir, max_time_s),
            env=env,
            cwd=out_dir,  # schemathesis keeps a cache folder where it runs
            capture_output=True,
            text=True,
            timeout=budget,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ScanError(f"schemathesis did not finish within {budget:.0f} s") from exc
    (out_dir / "schemathesis.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    report = out_dir / NDJSON
    if not report.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ScanError(f"schemathesis wrote no report (exit {done.returncode}): {' '.join(tail)}")
    run = findings_from_ndjson(report)
    run.duration_s = time.monotonic() - started
    run.version = run.version or _version()
    run.reports = [NDJSON, JUNIT, "schemathesis.log"]
    if done.returncode not in (0, 1):  # 1: failures found; anything else: it could not run
        run.notes.append(f"schemathesis exited {done.returncode}; see schemathesis.log")
    return run


# --- report -> findings -------------------------------------------------------------------


def _events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def findings_from_ndjson(path: Path) -> FuzzRun:
    """Findings from a schemathesis NDJSON event report: one per (operation, failed check),
    the first failing case's request as evidence and a curl line to reproduce it. A 502, 503
    or 504 is the platform shedding load with a documented answer (an open breaker, a deadline),
    so ``not_a_server_error`` on one of those is informational: rerun on an idle machine."""
    run = FuzzRun()
    seen: dict[tuple[str, str, bool], Finding] = {}
    for event in _events(path):
        if len(event) != 1:
            continue
        kind, body = next(iter(event.items()))
        if not isinstance(body, dict):
            continue
        if kind == "Initialize":
            run.version = str(body.get("schemathesis_version") or run.version)
        if kind == "NonFatalError":
            value = body.get("value") or {}
            run.notes.append(f"{body.get('label', '')}: {value.get('type', 'error')}")
        if kind != "ScenarioFinished":
            continue
        recorder = body.get("recorder") or {}
        label = str(recorder.get("label") or "")
        cases = recorder.get("cases") or {}
        interactions = recorder.get("interactions") or {}
        for case_id, checks in (recorder.get("checks") or {}).items():
            run.test_cases += 1
            for check in checks:
                if str(check.get("status", "")).lower() != "failure":
                    continue
                name = str(check.get("name", ""))
                interaction = interactions.get(case_id) or {}
                status = (interaction.get("response") or {}).get("status_code")
                shed = name == "not_a_server_error" and status in (502, 503, 504)
                key = (label, name, shed)
                if key in seen:
                    seen[key].instances += 1
                    continue
                seen[key] = _finding(
                    name, label, check.get("failure_info") or {}, cases.get(case_id), interaction
                )
                if shed:
                    seen[key] = seen[key].model_copy(
                        update={
                            "risk": "info",
                            "level": "INFO",
                            "title": "The platform shed load (502-504) during the scan",
                            "fix": "Documented answers of a busy platform; scan again on an "
                            "idle machine. A 500 would be a finding.",
                        }
                    )
    run.findings = list(seen.values())
    run.notes = sorted(set(run.notes))
    return run


def _curl(request: dict[str, Any]) -> str:
    parts = [f"curl -i -X {request.get('method', 'GET')}"]
    for name, values in (request.get("headers") or {}).items():
        for value in values if isinstance(values, list) else [values]:
            shown = "Bearer $TOKEN" if name.lower() == "authorization" else value
            parts.append(f"-H '{name}: {shown}'")
    body = request.get("body")
    if isinstance(body, dict) and "$base64" in body:
        try:
            text = base64.b64decode(body["$base64"]).decode("utf-8", "replace")
        except ValueError:
            text = ""
        if text:
            parts.append("--data-raw " + shlex.quote(text[:2000]))
    parts.append(shlex.quote(str(request.get("uri", ""))))
    return " ".join(parts)


def _finding(
    check: str,
    label: str,
    failure: dict[str, Any],
    case: dict[str, Any] | None,
    interaction: dict[str, Any],
) -> Finding:
    rule = CHECK_RULES.get(check, _Rule(check, "low", 0, "other", ""))
    method, _, path = label.partition(" ")
    request = interaction.get("request") or {}
    response = interaction.get("response") or {}
    info = failure.get("failure") or failure
    title = str(info.get("title") or rule.title)
    message = " ".join(str(info.get("message") or "").split())
    status = response.get("status_code", "")
    evidence = f"{status} {title}" + (f": {message}" if message else "")
    value = (case or {}).get("value") or {}
    return Finding(
        id=finding_id("schemathesis", check, method, path),
        engine="schemathesis",
        rule=check,
        title=rule.title,
        risk=rule.risk,
        confidence="confirmed",
        level=level_for_risk(rule.risk),
        cwe=rule.cwe or None,
        owasp=rule.owasp,
        method=method,
        url=str(request.get("uri") or path),
        evidence=evidence[:2000],
        fix=rule.fix,
        reproduce=_curl(request) if request else "",
        details={
            "operation": label,
            "code": info.get("code"),
            "phase": ((value.get("meta") or {}).get("phase") or {}).get("name"),
        },
    )
