"""Actions: what a scenario does to the platform through the runtime (never through ``cnop``).

Runtime calls block (a start waits until the service is ready), so the engine runs them in a
thread. :class:`Damage` remembers what a run broke, so the engine can undo it even when the
scenario's own rollbacks forgot something or the run was interrupted half way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grader.prometheus import Prometheus, PrometheusError
from scenarios.runtime.base import SERVICES, Runtime, RuntimeError_
from scenarios.schema import ActionSpec

WAIT_POLL_S = 0.25
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


def batches(specs: Sequence[ActionSpec]) -> list[list[ActionSpec]]:
    """Consecutive reconfigures form one batch (their services restart together: a drill's
    setup that reconfigures two services waits for one restart); any other action is a batch
    of its own, in order."""
    out: list[list[ActionSpec]] = []
    for spec in specs:
        if spec.action == "reconfigure" and out and out[-1][-1].action == "reconfigure":
            out[-1].append(spec)
        else:
            out.append([spec])
    return out


@dataclass
class Damage:
    """What this run did that needs undoing, in the order the undo must happen."""

    down: set[str] = field(default_factory=set)  # killed or stopped
    paused: set[str] = field(default_factory=set)
    reconfigured: set[str] = field(default_factory=set)
    faults: bool = False


@dataclass
class ActionRunner:
    runtime: Runtime
    # Settings every reconfigure of a service keeps (the weakened mode of `lab selftest`):
    # a scenario that reconfigures the gateway must not silently re-harden it.
    overlay: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    damage: Damage = field(default_factory=Damage)
    prometheus_url: str | None = None
    waits: dict[str, Any] = field(default_factory=dict)  # wait_for outcomes, for the report

    def env_for(self, service: str, env: Mapping[str, str] | None) -> dict[str, str] | None:
        base = dict(self.overlay.get(service, {}))
        if env is None:
            return base or None
        return {**base, **env}

    def run(self, spec: ActionSpec) -> str:
        """Do one action; returns a short description of what happened."""
        rt, target, d = self.runtime, spec.target, self.damage
        name = spec.action
        if name == "sleep":
            time.sleep(spec.seconds)
        elif name == "wait_for":
            return self._wait_for(spec)
        elif name in ("kill", "stop"):
            assert target
            getattr(rt, name)(target)
            d.down.add(target)
        elif name == "start":
            assert target
            rt.start(target)
            d.down.discard(target)
        elif name == "restart":
            assert target
            rt.restart(target)
            d.down.discard(target)
        elif name == "pause":
            assert target
            rt.pause(target)
            d.paused.add(target)
        elif name == "resume":
            assert target
            rt.resume(target)
            d.paused.discard(target)
        elif name == "reconfigure":
            return self.run_batch([spec])
        elif name == "set_fault":
            assert target and spec.fault
            rt.set_fault(target, spec.fault, spec.params, spec.ttl_seconds)
            d.faults = True
        elif name == "clear_faults":
            cleared = rt.clear_faults(target)
            d.faults = d.faults and target is not None
            return f"{spec.describe()} ({cleared} cleared)"
        else:  # pragma: no cover - the schema's Literal forbids it
            raise RuntimeError_(f"unknown action {name!r}")
        return spec.describe()

    def run_batch(self, batch: Sequence[ActionSpec]) -> str:
        """Do a batch of :func:`batches`: one action, or reconfigures whose services restart
        together."""
        if len(batch) == 1 and batch[0].action != "reconfigure":
            return self.run(batch[0])
        changes: dict[str, dict[str, str] | None] = {}
        for spec in batch:
            assert spec.action == "reconfigure" and spec.target
            changes[spec.target] = self.env_for(spec.target, spec.env)
        self.runtime.reconfigure_many(changes)
        for spec in batch:
            assert spec.target
            if spec.env is None:
                self.damage.reconfigured.discard(spec.target)
            else:
                self.damage.reconfigured.add(spec.target)
        return "; ".join(spec.describe() for spec in batch)

    def _wait_for(self, spec: ActionSpec) -> str:
        assert spec.query
        if not self.prometheus_url:
            raise RuntimeError_("wait_for needs Prometheus")
        started = time.monotonic()
        deadline = started + spec.seconds
        observed: list[float] = []
        with Prometheus(self.prometheus_url, timeout=5.0) as prom:
            while True:
                try:
                    observed = [s.v for s in prom.query(spec.query)]
                except PrometheusError:
                    observed = []
                if observed and all(OPS[spec.op](v, spec.value) for v in observed):
                    met = True
                    break
                if time.monotonic() >= deadline:
                    met = False
                    break
                time.sleep(WAIT_POLL_S)
        waited = round(time.monotonic() - started, 2)
        self.waits[spec.query] = {"met": met, "waited_s": waited, "observed": observed}
        verdict = "met" if met else "NOT met"
        return f"{spec.describe()}: {verdict} after {waited:g}s"

    async def run_async(self, spec: ActionSpec) -> str:
        if spec.action == "sleep":
            await asyncio.sleep(spec.seconds)
            return spec.describe()
        return await asyncio.to_thread(self.run, spec)

    def undo_all(self) -> list[str]:
        """Undo whatever is still broken; returns the problems (never raises)."""
        problems: list[str] = []
        d, rt = self.damage, self.runtime

        def attempt(label: str, fn: object, *args: object) -> None:
            try:
                fn(*args)  # type: ignore[operator]
            except Exception as exc:  # a failed undo must not stop the other undos
                problems.append(f"{label}: {exc}")

        try:
            attempt("clear faults", rt.clear_faults)
        finally:
            d.faults = False
        for name in sorted(d.paused):
            attempt(f"resume {name}", rt.resume, name)
        d.paused.clear()
        # Infrastructure first: services need Redis and DynamoDB to become ready.
        for name in sorted(d.down, key=lambda n: n in SERVICES):
            attempt(f"start {name}", rt.start, name)
        d.down.clear()
        if d.reconfigured:
            names = sorted(d.reconfigured)
            defaults = {name: self.env_for(name, None) for name in names}
            attempt(f"reconfigure {', '.join(names)}", rt.reconfigure_many, defaults)
        d.reconfigured.clear()
        return problems
