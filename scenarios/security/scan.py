"""One security scan of a running sandbox, graded like a drill.

A scan is: fresh limiter/block state, two users created through the API (:mod:`.target`), the
chosen engine (schemathesis, wapiti or ZAP) on the published API description, the lab's targeted
probes (:mod:`.probes`, with every engine), fresh state again (the probes get their own
addresses blocked on purpose), then the grade: one check per OWASP API Top 10 (2023) category,
passed when no finding in it is at WARN or above (:mod:`grader.scoring`). The run folder is the
one ``lab run`` writes (result.json with every finding, report.html, report.md, junit.xml),
plus the engine's own reports.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from grader.findings import Finding
from grader.model import CheckResult, Phase, RunResult, effective_mode
from grader.report import render_run
from grader.scoring import category_checks
from scenarios.hints import SCAN_HINTS
from scenarios.provenance import RunTags, collect_for
from scenarios.runtime.base import Runtime, RuntimeError_
from scenarios.security import fuzz, probes, wapiti, zap
from scenarios.security.target import ScanError, ScanTarget, prepare_target

__all__ = ["ENGINES", "PROFILES", "ScanOptions", "run_scan", "zap_report_problem"]

PROFILES = ("baseline", "api", "full")
ENGINES = ("schemathesis", "wapiti", "zap", "probe")
Progress = Callable[[str], None]
TITLES = {
    "baseline": "Security scan: baseline (passive checks and probes)",
    "api": "Security scan: the API description, authenticated",
    "full": "Security scan: full (every operation, every rule)",
}


@dataclass
class ScanOptions:
    profile: str = "api"
    engine: str = "schemathesis"
    seed: int = 0
    # The catalogue flaws the caller switched on for this scan (the result records the flaws
    # actually on, from the sandbox).
    flaws: list[str] = field(default_factory=list)
    probes: list[str] | None = None  # None: every probe
    max_time_s: int | None = None  # the engine's time budget (None: the profile's)
    # engine zap only: grade this ZAP JSON report (-J layout) instead of running ZAP, so a
    # machine without Docker reads and grades a report the same way (the probes still run).
    zap_report: Path | None = None


@dataclass
class _EngineRun:
    findings: list[Finding] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def zap_report_problem(engine: str, report: Path | None) -> str | None:
    """Why ``--report`` cannot be used as given, or None: the one rule for the CLI (a usage
    error) and for :func:`run_scan`'s other callers."""
    if report is None:
        return None
    if engine != "zap":
        return "--report is a ZAP JSON report: it goes with --engine zap"
    if not report.is_file():
        return f"no ZAP report at {report}"
    return None


def _now() -> datetime:
    return datetime.now(UTC)


def _run_engine(
    runtime: Runtime, target: ScanTarget, options: ScanOptions, out_dir: Path | None
) -> _EngineRun:
    work = (out_dir or Path(".lab") / "scan") / options.engine
    if options.engine == "schemathesis":
        run = fuzz.run_schemathesis(
            target, options.profile, options.seed, work, max_time_s=options.max_time_s
        )
        return _EngineRun(
            run.findings,
            {
                "version": run.version,
                "duration_s": round(run.duration_s, 1),
                "test_cases": run.test_cases,
                "reports": [f"{options.engine}/{r}" for r in run.reports],
            },
            run.notes,
        )
    if options.engine == "wapiti":
        w = wapiti.run_wapiti(
            target, options.profile, work, home=runtime.config.home, max_time_s=options.max_time_s
        )
        return _EngineRun(
            w.findings,
            {
                "version": w.version,
                "duration_s": round(w.duration_s, 1),
                "reports": [f"{options.engine}/{r}" for r in w.reports],
            },
            w.notes,
        )
    if options.engine == "zap" and options.zap_report is not None:
        work.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(options.zap_report, work / zap.JSON_REPORT)
        return _EngineRun(
            zap.findings_from_report(work / zap.JSON_REPORT),
            {
                "version": "report given with --report (ZAP did not run)",
                "duration_s": 0.0,
                "report_from": str(options.zap_report),
                "reports": [f"zap/{zap.JSON_REPORT}"],
            },
            [f"ZAP did not run: its findings are those of {options.zap_report}"],
        )
    if options.engine == "zap":
        gateway, network = _zap_network(runtime, target)
        spec = zap.zap_spec(
            options.profile,
            gateway=gateway,
            token=target.owner.token,
            network=network,
            wrk_dir=work.resolve(),
        )
        found, duration = zap.run_zap(spec, work)
        return _EngineRun(
            found,
            {
                "version": spec.image,
                "duration_s": round(duration, 1),
                "command": spec.command[:3],
                "reports": [f"zap/{zap.JSON_REPORT}", f"zap/{zap.HTML_REPORT}"],
            },
        )
    return _EngineRun()  # probe: the probes alone


def _zap_network(runtime: Runtime, target: ScanTarget) -> tuple[str, str]:
    """Where ZAP's container finds the gateway: inside the sandbox's edge network on Docker,
    through the host's network locally."""
    if runtime.name == "docker":
        project = getattr(runtime, "project", "cnop-lab")
        return "http://gateway:8080", f"{project}_edge"
    return target.gateway, "host"


def run_scan(
    runtime: Runtime,
    options: ScanOptions,
    *,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    tags: RunTags | None = None,
) -> RunResult:
    """Scan the running sandbox and (with ``out_dir``) write the run folder. Raises
    :class:`ScanError` when the scan cannot start (platform down, an engine missing)."""
    say = progress or (lambda _: None)
    if options.profile not in PROFILES:
        raise ScanError(f"unknown scan {options.profile!r}; one of: {', '.join(PROFILES)}")
    if options.engine not in ENGINES:
        raise ScanError(f"unknown engine {options.engine!r}; one of: {', '.join(ENGINES)}")
    try:
        if not runtime.is_up():
            raise ScanError("the platform is not running; run `lab up` first")
    except RuntimeError_ as exc:
        raise ScanError(str(exc)) from exc
    problem = zap_report_problem(options.engine, options.zap_report)
    if problem is not None:
        raise ScanError(problem)
    if options.engine == "zap" and options.zap_report is None:  # a given report needs no ZAP
        zap.preflight()
    elif options.engine == "wapiti":
        wapiti.find_wapiti(runtime.config.home)
    t0 = time.monotonic()

    def step(text: str) -> None:
        say(f"[{time.monotonic() - t0:6.1f}s] {text}")

    started_at = _now()
    in_force = runtime.settings_in_force()
    # Any setting beyond the defaults (a flaw included) makes the run "weakened (custom)".
    mode = effective_mode("hardened", in_force)
    provenance = collect_for(zap.RULES_FILE, runtime, tags, hints_of=SCAN_HINTS)
    errors: list[str] = []
    notes: list[str] = []
    engine = _EngineRun()
    probe_run: probes.ProbeRun | None = None
    target: ScanTarget | None = None
    cleared = runtime.clear_state_keys()
    step(f"scan {options.profile} with {options.engine} (seed {options.seed}, {mode}); "
         f"cleared {cleared} state keys")  # fmt: skip
    try:
        target = prepare_target(runtime)
        step(f"users {target.owner.username} and {target.other.username} ready")
        if options.engine != "probe":
            step(f"running {options.engine}")
            engine = _run_engine(runtime, target, options, out_dir)
            step(f"{options.engine}: {len(engine.findings)} findings")
        step("probes")
        probe_run = probes.run_probes(target, options.probes)
        step(f"probes: {len(probe_run.findings)} findings in {probe_run.requests} requests")
    except ScanError:
        raise
    except (RuntimeError_, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        step(f"error: {exc}")
    finally:
        try:
            runtime.clear_state_keys()  # the probes' addresses are blocked on purpose
        except RuntimeError_ as exc:
            errors.append(f"clearing state keys after the scan: {exc}")
    finished_at = _now()
    findings = [*engine.findings, *(probe_run.findings if probe_run else [])]
    notes += engine.notes + (probe_run.notes if probe_run else [])
    checks: list[CheckResult] = category_checks(findings)
    required_ok = all(c.passed for c in checks if c.required)
    info = {
        "engine": options.engine,
        "profile": options.profile,
        "target": target.openapi_url if target else "",
        "probes": sorted(probes.PROBES) if options.probes is None else options.probes,
        "probe_requests": probe_run.requests if probe_run else 0,
        "notes": notes,
        **engine.info,
    }
    result = RunResult(
        scenario=f"scan-{options.profile}-{options.engine}",
        title=TITLES[options.profile] + f" ({options.engine})",
        description="Findings of every engine, graded per OWASP API Security Top 10 (2023) "
        "category: a category passes when it holds no finding at WARN or above.",
        seed=options.seed,
        params={"profile": options.profile, "engine": options.engine},
        runtime=runtime.name,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=(finished_at - started_at).total_seconds(),
        phases=[Phase(name="scan", start=started_at, end=finished_at)],
        checks=checks,
        score=sum(c.points for c in checks),
        max_score=sum(c.max_points for c in checks),
        passed=required_ok and not errors,
        errors=errors,
        mode=mode,
        settings=in_force,
        provenance=provenance,
        findings=findings,
        scan=info,
        flaws=provenance.flaws,
    )
    if out_dir is not None:
        render_run(result, out_dir)
    return result
