"""`lab selftest --security`: proof that the scans mean something.

Two promises, checked on the running sandbox:

1. the hardened platform (no flaw on) scanned by the offline engines (schemathesis with the
   probes, ``api`` profile) yields no finding at WARN or above, and no finding that names a flaw;
2. for each flaw of ``security/flaws.yaml``, with that flaw alone switched on, the probe engine
   reports at least one finding that names it.

A flaw the probes cannot see, or a hardened finding, fails the selftest: a scanner that reports
nothing proves nothing, and one that cries wolf on the hardened platform teaches nothing. Flaws
are switched from one straight to the next (each switch restarts only the services concerned),
and the flaws on before the selftest are on again after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from grader.model import RunResult
from grader.report import Expectation
from scenarios.flaws import flaw_layer, load_flaws
from scenarios.runtime.base import Runtime, RuntimeError_
from scenarios.security.scan import ScanOptions, run_scan

__all__ = ["FlawOutcome", "SecuritySelftest", "run_security_selftest", "switch_flaws"]

Progress = Callable[[str], None]
SETTLE_S = 120.0  # beyond the runtime's own start timeout, on a machine busy with other work


def switch_flaws(runtime: Runtime, layer: Mapping[str, Mapping[str, Mapping[str, str]]]) -> None:
    """Exactly these flaws on. A restart slower than the runtime's start timeout (a loaded
    machine) is waited out a while longer before the selftest gives up."""
    try:
        runtime.set_flaws({n: {s: dict(e) for s, e in env.items()} for n, env in layer.items()})
        return
    except RuntimeError_ as exc:
        if "not ready in time" not in str(exc):
            raise
        first = str(exc).splitlines()[0]
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        if all(c.ready is not False for c in runtime.status()):
            return
        time.sleep(1.0)
    raise RuntimeError_(f"{first} (waited {SETTLE_S:.0f} s more)")


@dataclass
class FlawOutcome:
    flaw: str
    hardened_silent: bool  # no hardened finding names it
    found: bool  # with it on, a finding names it
    result: RunResult | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.hardened_silent and self.found


@dataclass
class SecuritySelftest:
    hardened: RunResult
    hardened_ok: bool
    flaws: list[FlawOutcome]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.hardened_ok and all(f.ok for f in self.flaws)

    def runs(self, out_dir: Path) -> list[tuple[Path, RunResult, Expectation]]:
        """Each run with its folder and what the selftest wanted of it (for the index page)."""
        rows = [
            (
                out_dir / "hardened",
                self.hardened,
                Expectation("no finding at WARN or above", self.hardened_ok),
            )
        ]
        for f in self.flaws:
            if f.result is not None:
                rows.append(
                    (out_dir / f"flaw-{f.flaw}", f.result, Expectation(f"finds {f.flaw}", f.ok))
                )
        return rows


def run_security_selftest(
    runtime: Runtime,
    *,
    seed: int,
    out_dir: Path | None = None,
    only: list[str] | None = None,
    engine: str = "schemathesis",
    profile: str = "api",
    max_time_s: int | None = None,
    progress: Progress | None = None,
) -> SecuritySelftest:
    say = progress or (lambda _: None)
    catalogue = load_flaws()
    names = [n for n in catalogue if only is None or n in only]
    before = runtime.flaws_in_force()
    outcomes: list[FlawOutcome] = []
    try:
        if before:
            say(f"flaws off for the hardened scan: {', '.join(sorted(before))}")
            switch_flaws(runtime, {})
        say(f"hardened scan: {profile} with {engine} and the probes")
        hardened = run_scan(
            runtime,
            ScanOptions(profile=profile, engine=engine, seed=seed, max_time_s=max_time_s),
            out_dir=out_dir / "hardened" if out_dir else None,
            progress=say,
        )
        loud = [f for f in hardened.findings if f.gated]
        hardened_ok = not loud and not hardened.errors and hardened.mode == "hardened"
        problems = [f"hardened: {f.engine}:{f.rule} {f.title} at {f.where}" for f in loud]
        problems += [f"hardened: {e}" for e in hardened.errors]
        if hardened.mode != "hardened":
            problems.append(f"hardened scan ran with settings in force: {hardened.settings}")
        named = {f.flaw for f in hardened.findings if f.flaw}
        for name in names:
            say(f"flaw {name} on")
            switch_flaws(runtime, flaw_layer([name], catalogue))
            result = run_scan(
                runtime,
                ScanOptions(profile=profile, engine="probe", seed=seed, flaws=[name]),
                out_dir=out_dir / f"flaw-{name}" if out_dir else None,
                progress=say,
            )
            found = any(f.flaw == name for f in result.findings)
            outcome = FlawOutcome(name, name not in named, found, result)
            if not found:
                outcome.problems.append(f"with {name} on, no finding names it")
            if name in named:
                outcome.problems.append(f"the hardened scan already names {name}")
            others = sorted({f.flaw for f in result.findings if f.flaw and f.flaw != name})
            if others:
                outcome.problems.append(f"also named (not failing): {', '.join(others)}")
            outcomes.append(outcome)
    finally:
        say("flaws back as they were" + (f": {', '.join(sorted(before))}" if before else ""))
        switch_flaws(runtime, before)
    return SecuritySelftest(hardened, hardened_ok, outcomes, problems)
