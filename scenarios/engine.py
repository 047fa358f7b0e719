"""The scenario engine: set up, run the method, always roll back, then have the grader judge.

One run is: fresh limiter/lock/block state, setup (actions, then accounts created through the
public API), the steady-state hypothesis, the method (timed steps, concurrent where they
overlap; phases recorded as UTC moments), rollbacks (always: also on an error or Ctrl-C), a
final scrape, the steady-state hypothesis again, the checks, charts and the report. The seed
makes the traffic's random choices reproducible; a per-run nonce keeps usernames unique, so a
rerun with the same seed never collides with the accounts of an earlier one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx

from grader.bundles import seal_result
from grader.charts import chart_from_query
from grader.evaluate import evaluate_all
from grader.model import (
    Account,
    Chart,
    CheckResult,
    InvariantCheck,
    Phase,
    RunContext,
    RunResult,
    Timeline,
    effective_mode,
)
from grader.prometheus import Prometheus, PrometheusError
from grader.report import render_run
from grader.timeline import build_timeline
from scenarios.accounts import registration_body
from scenarios.actions import OPS, ActionRunner, batches
from scenarios.provenance import RunTags
from scenarios.provenance import collect as collect_provenance
from scenarios.runtime.base import SERVICES, ClientAddresses, Runtime, RuntimeError_
from scenarios.schema import HttpProbe, PromQLProbe, Scenario, TrafficStep
from scenarios.traffic import (
    API,
    RUNNERS,
    SETUP_IP,
    Recorder,
    TrafficContext,
    TrafficError,
    client_addresses,
    source_client,
    summarize,
)

Progress = Callable[[str], None]
METHOD_GRACE_S = 60.0  # beyond the planned length, a method is stuck and gets cancelled
SCRAPE_WAIT_S = 5.0
TIMELINE_PADDING_S = 1.0  # the timeline shows a little of what came after the drill


class EngineError(Exception):
    """The run could not start or could not be set up; one line for the CLI."""


def _now() -> datetime:
    return datetime.now(UTC)


def _quiet(_: str) -> None:
    return None


def default_out_dir(name: str, root: Path = Path("runs")) -> Path:
    return root / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


@dataclass
class _Run:
    """Mutable state of one run, filled in as it goes (so a failure still leaves a result)."""

    scenario: Scenario
    runtime: Runtime
    seed: int
    progress: Progress
    runner: ActionRunner
    nonce: str = field(default_factory=lambda: secrets.token_hex(3))
    recorder: Recorder = field(default_factory=Recorder)
    accounts: dict[str, Account] = field(default_factory=dict)
    phases: dict[str, dict[str, datetime]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    steady: dict[str, Any] = field(default_factory=dict)
    prom: Prometheus | None = None
    method_start: datetime | None = None
    method_end: datetime | None = None
    # time.monotonic() when the method (the drill) started: the one clock of a run. Progress
    # lines, the labs' timelines, the report's Phases table and its charts all count from it.
    t0: float = 0.0

    def say(self, text: str) -> None:
        self.progress(f"{progress_stamp(self.t0)} {text}")


def progress_stamp(t0: float, now: float | None = None) -> str:
    """``[  4.1s]``: seconds since the drill started; ``[ setup]`` before it has."""
    if not t0:
        return "[ setup]"
    elapsed = (time.monotonic() if now is None else now) - t0
    return f"[{elapsed:6.1f}s]"


# --- accounts -----------------------------------------------------------------------------


SETUP_WAIT_SECONDS = 30.0


def _credentials(name: str, seed: int, nonce: str, rng: random.Random) -> tuple[str, str]:
    tag = f"{seed % 10000:04d}"
    username = f"{name}_{tag}{nonce}"  # name <= 12 chars: at most 23, within ^[A-Za-z0-9_]{6,30}$
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    password = "Lab!" + "".join(rng.choice(alphabet) for _ in range(8)) + "a9Z"
    return username, password


async def _call(
    client: httpx.AsyncClient, method: str, path: str, what: str, ok: int, **kwargs: Any
) -> httpx.Response:
    """A setup request; waits out a 429/503 with Retry-After (up to SETUP_WAIT_SECONDS in all:
    an open breaker left by the drill before says 10 s), else fails clearly."""
    waited = 0.0
    for _ in range(8):
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EngineError(f"setup: {what} failed ({type(exc).__name__})") from exc
        if response.status_code == ok:
            return response
        retry = response.headers.get("Retry-After", "")
        if response.status_code in (429, 503) and retry.isdigit():
            pause = max(0.5, float(retry))
            if waited + pause <= SETUP_WAIT_SECONDS:
                waited += pause
                await asyncio.sleep(pause)
                continue
        break
    detail = ""
    with contextlib.suppress(ValueError, AttributeError):
        detail = str(response.json().get("detail") or response.json().get("title") or "")
    raise EngineError(f"setup: {what} answered {response.status_code} {detail}".rstrip())


async def create_accounts(run: _Run, client: httpx.AsyncClient, rng: random.Random) -> None:
    for spec in run.scenario.setup_accounts:
        username, password = _credentials(spec.name, run.seed, run.nonce, rng)
        await _call(
            client,
            "POST",
            f"{API}/auth/register",
            f"register {spec.name}",
            201,
            json=registration_body(username, password, email_domain="lab.example.com"),
        )
        response = await _call(
            client,
            "POST",
            f"{API}/auth/login",
            f"login {spec.name}",
            200,
            json={"username": username, "password": password},
        )
        token = str(response.json()["access_token"])
        if spec.deposit > 0:
            await _call(
                client,
                "POST",
                f"{API}/balance/deposit",
                f"deposit for {spec.name}",
                201,
                json={"amount": f"{spec.deposit:.2f}"},
                headers={
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": f"lab-{run.nonce}-deposit-{spec.name}",
                },
            )
        run.accounts[spec.name] = Account(username=username, password=password, token=token)
        run.say(f"account {spec.name} = {username} (deposit {spec.deposit:.2f})")


# --- steady state -------------------------------------------------------------------------


async def check_steady_state(
    run: _Run, client: httpx.AsyncClient, prom: Prometheus
) -> dict[str, Any]:
    hypothesis = run.scenario.steady_state_hypothesis
    if hypothesis is None:
        return {"held": True, "probes": []}
    outcomes = []
    for probe in hypothesis.probes:
        if isinstance(probe, HttpProbe):
            outcomes.append(await _http_probe(run, client, probe))
        else:
            outcomes.append(await asyncio.to_thread(_promql_probe, prom, probe))
    return {"held": all(o["ok"] for o in outcomes), "probes": outcomes}


async def _http_probe(run: _Run, client: httpx.AsyncClient, probe: HttpProbe) -> dict[str, Any]:
    headers = {}
    body = probe.json_body
    method = probe.method
    if probe.account and probe.login:
        account = run.accounts[probe.account]
        body = {"username": account.username, "password": account.password}
        method = "POST"
    elif probe.account:
        headers["Authorization"] = f"Bearer {run.accounts[probe.account].token}"
    try:
        response = await client.request(method, probe.path, headers=headers, json=body)
        status = response.status_code
    except httpx.HTTPError as exc:
        return {"name": probe.name, "ok": False, "observed": type(exc).__name__}
    return {
        "name": probe.name,
        "ok": status in probe.expect_status,
        "observed": status,
        "expected": probe.expect_status,
    }


def _promql_probe(prom: Prometheus, probe: PromQLProbe) -> dict[str, Any]:
    try:
        samples = prom.query(probe.query)
    except PrometheusError as exc:
        return {"name": probe.name, "ok": False, "observed": str(exc)}
    values = [s.v for s in samples]
    if not values:
        return {"name": probe.name, "ok": probe.absent_ok, "observed": "no series"}
    ok = all(OPS[probe.op](v, probe.value) for v in values)
    return {
        "name": probe.name,
        "ok": ok,
        "observed": values if len(values) > 1 else values[0],
        "expected": f"{probe.op} {probe.value:g}",
    }


# --- the method ---------------------------------------------------------------------------


async def _run_step(run: _Run, tctx: TrafficContext, step: Any, loop_t0: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, loop_t0 + step.at - loop.time()))
    label = step.describe()
    run.say(f"> {label}")
    if isinstance(step, TrafficStep):
        await RUNNERS[step.kind](tctx, step.generator, step.typed_params(), step.duration)
        summary = summarize(run.recorder.observations.get(step.generator, []))
        run.say(f"  {step.generator}: {summary['requests']} requests {summary['by_status']}")
    else:
        done = await run.runner.run_async(step)
        run.say(f"  done: {done}")
    moment = _now()
    for name in step.begin:
        run.phases.setdefault(name, {}).setdefault("start", moment)
    for name in step.end:
        run.phases.setdefault(name, {}).setdefault("end", moment)
    for name in [*step.begin, *step.end]:
        run.say(f"  phase {name} {'begins' if name in step.begin else 'ends'}")


async def run_method(run: _Run, tctx: TrafficContext) -> None:
    loop = asyncio.get_running_loop()
    loop_t0 = loop.time()
    run.method_start = _now()
    run.t0 = time.monotonic()
    tasks = [asyncio.create_task(_run_step(run, tctx, s, loop_t0)) for s in run.scenario.method]
    try:
        done, pending = await asyncio.wait(
            tasks,
            timeout=run.scenario.planned_seconds + METHOD_GRACE_S,
            return_when=asyncio.FIRST_EXCEPTION,
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if pending and not any(t.exception() for t in done if not t.cancelled()):
            raise EngineError("the method did not finish in time; its steps were cancelled")
        # The drill ends once Prometheus scraped every target after the last step: an instant
        # check evaluated at the drill's end then sees the last step's counts (scrapes are 1 s
        # apart, and a count made just before the end would otherwise be missed).
        last = _now()
        if run.prom is not None:
            with contextlib.suppress(PrometheusError):
                await asyncio.to_thread(run.prom.wait_for_scrape_after, last, SCRAPE_WAIT_S)
    finally:
        for task in tasks:
            task.cancel()
        run.method_end = _now()


async def _prepare_and_run(run: _Run, net: ClientAddresses, prom: Prometheus) -> None:
    rng = random.Random(run.seed)
    async with source_client(net.gateway, net.source(SETUP_IP), 15.0) as client:
        await create_accounts(run, client, rng)
        run.steady["before"] = await check_steady_state(run, client, prom)
        if not run.steady["before"]["held"]:
            failed = [p["name"] for p in run.steady["before"]["probes"] if not p["ok"]]
            raise EngineError(
                "the steady-state hypothesis does not hold before the method "
                f"({', '.join(failed)}); the platform is not healthy (try `lab reset`)"
            )
        run.say("steady state holds; method starts")
        tctx = TrafficContext(
            gateway_url=net.gateway,
            accounts=run.accounts,
            rng=rng,
            recorder=run.recorder,
            nonce=run.nonce,
            signing_secret=run.runtime.signing_secret(),
            sources=net.sources,
        )
        for step in run.scenario.method:
            if isinstance(step, TrafficStep):
                for name in _recorded_names(step):
                    run.recorder.ensure(name)
        try:
            await run_method(run, tctx)
        finally:
            await tctx.aclose()


def _recorded_names(step: TrafficStep) -> list[str]:
    from scenarios.traffic import generator_names

    return generator_names(step.generator, step.kind, step.typed_params())


async def _steady_after(run: _Run, net: ClientAddresses, prom: Prometheus) -> dict[str, Any]:
    async with source_client(net.gateway, net.source(SETUP_IP), 15.0) as client:
        return await check_steady_state(run, client, prom)


def drill_addresses(scenario: Scenario) -> list[str]:
    """Every client address the run sends from: setup's and each traffic step's."""
    found = {SETUP_IP}
    for step in scenario.method:
        if isinstance(step, TrafficStep):
            found.update(client_addresses(step.typed_params()))
    return sorted(found, key=ipaddress.ip_address)


# --- the whole run ------------------------------------------------------------------------


def _phases(run: _Run) -> dict[str, Phase]:
    start = run.method_start or _now()
    end = run.method_end or _now()
    about = run.scenario.phases.get("drill", "the whole method: every clock counts from its start")
    out = {"drill": Phase(name="drill", start=start, end=end, about=about)}
    for name in run.scenario.phase_names:
        if name == "drill":
            continue
        marks = run.phases.get(name, {})
        if "start" not in marks:
            continue  # never began (the method failed before): checks on it report an error
        # A phase ended by a step that finished before the step that began it is empty.
        finish = max(marks.get("end", end), marks["start"])
        out[name] = Phase(
            name=name, start=marks["start"], end=finish, about=run.scenario.phases.get(name, "")
        )
    return out


def _resolve_specs(run: _Run, stats: Mapping[str, Any]) -> list[Any]:
    specs = []
    for spec in run.scenario.checks:
        if isinstance(spec, InvariantCheck) and spec.value_from:
            value = stats.get(spec.value_from)
            spec = spec.model_copy(
                update={"value": float(value) if isinstance(value, int | float) else None}
            )
        specs.append(spec)
    return specs


def _charts(run: _Run, prom: Prometheus, phases: dict[str, Phase]) -> list[Chart]:
    charts = []
    drill = phases["drill"]
    window = f"{max(1, int((drill.end - drill.start).total_seconds()) + 2)}s"
    for spec in run.scenario.charts:
        query = spec.query.replace("{window}", window)
        try:
            charts.append(
                chart_from_query(
                    prom,
                    spec.title,
                    query,
                    phases,
                    spec.legend,
                    unit=spec.unit,
                    shaded=None if spec.shaded is None else [s for s in spec.shaded if s in phases],
                    value_names={str(k): v for k, v in spec.value_names.items()},
                )
            )
        except Exception as exc:  # a chart never fails a run
            run.errors.append(f"chart {spec.title!r}: {exc}")
    return charts


def _timeline(run: _Run, phases: dict[str, Phase]) -> Timeline | None:
    """The services' log events over the drill, joined on request id, for the report's
    swimlane chart; like a chart, it never fails a run."""
    drill = phases["drill"]
    # From the drill's start (setup's requests and the steady-state probes before it are not
    # part of the story) to a little after its end (a late answer, a restart by a rollback).
    since = drill.start
    until = drill.end + timedelta(seconds=TIMELINE_PADDING_S)
    logs: dict[str, list[dict[str, Any]]] = {}
    try:
        for service in SERVICES:
            logs[service] = list(run.runtime.log_events(service, since))
        return build_timeline(logs, run.recorder.observations, since, until)
    except Exception as exc:  # the report then has no timeline; the run is graded all the same
        run.say(f"timeline left out: {type(exc).__name__}: {exc}")
        return None


def run_scenario(
    scenario: Scenario,
    runtime: Runtime,
    *,
    seed: int,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    mode: Literal["hardened", "weakened"] = "hardened",
    overlay: Mapping[str, Mapping[str, str]] | None = None,
    tags: RunTags | None = None,
) -> RunResult:
    """Run one scenario end to end and (when ``out_dir`` is given) write its report.

    ``tags`` name the student and the assignment; the result records them with the run's
    provenance, and a run for an assignment is sealed with its key (grader.bundles).

    Raises :class:`EngineError` when the platform is not running, and re-raises
    ``KeyboardInterrupt`` after the rollbacks ran.
    """
    say = progress or _quiet
    try:
        up = runtime.is_up()
    except RuntimeError_ as exc:
        raise EngineError(str(exc)) from exc
    if not up:
        raise EngineError("the platform is not running; run `lab up` first")
    endpoints = runtime.endpoints()
    run = _Run(
        scenario=scenario,
        runtime=runtime,
        seed=seed,
        progress=say,
        runner=ActionRunner(
            runtime, overlay=dict(overlay or {}), prometheus_url=endpoints.prometheus
        ),
    )
    started_at = _now()
    # Recorded before the drill's own setup: a drill that reconfigures a service for its
    # experiment (and undoes it) is still a run of the platform as it was configured.
    in_force = runtime.settings_in_force()
    claimed = effective_mode(mode, in_force, overlay)
    provenance = collect_provenance(scenario, runtime, tags)
    prom = Prometheus(endpoints.prometheus)
    run.prom = prom
    interrupted = False
    net: ClientAddresses | None = None
    try:
        cleared = runtime.clear_state_keys()
        shown = _mode_text(claimed, in_force)
        run.say(f"{scenario.name} (seed {seed}, {shown}): cleared {cleared} state keys")
        net = runtime.client_addresses(drill_addresses(scenario))
        if net.note:
            run.say(f"client addresses: {net.note}")
        for batch in batches(scenario.setup_actions):
            run.say("setup: " + "; ".join(action.describe() for action in batch))
            run.runner.run_batch(batch)
        asyncio.run(_prepare_and_run(run, net, prom))
    except KeyboardInterrupt:
        interrupted = True
        run.errors.append("interrupted (Ctrl-C); rollbacks ran")
    except (EngineError, RuntimeError_, TrafficError) as exc:
        run.errors.append(str(exc))
        run.say(f"error: {exc}")
    except Exception as exc:  # report it; the rollbacks below must still run
        run.errors.append(f"unexpected {type(exc).__name__}: {exc}")
        run.say(f"error: {type(exc).__name__}: {exc}")
    finally:
        for batch in batches(scenario.rollbacks):
            described = "; ".join(action.describe() for action in batch)
            run.say(f"rollback: {described}")
            try:
                run.runner.run_batch(batch)
            except Exception as exc:  # every rollback is tried
                run.errors.append(f"rollback {described}: {exc}")
        run.errors.extend(f"undo {p}" for p in run.runner.undo_all())
    if interrupted:
        prom.close()
        raise KeyboardInterrupt

    try:
        if run.method_end is not None and net is not None:
            run.steady["after"] = asyncio.run(_steady_after(run, net, prom))
            if not run.steady["after"]["held"]:
                failed = [p["name"] for p in run.steady["after"]["probes"] if not p["ok"]]
                run.say(f"steady state does NOT hold after the method ({', '.join(failed)})")
        phases = _phases(run)
        stats = dict(run.recorder.stats)
        ctx = RunContext(
            prometheus_url=endpoints.prometheus,
            gateway_url=endpoints.gateway,
            phases=phases,
            traffic=run.recorder.observations,
            accounts=run.accounts,
            params={**scenario.parameters, **stats, "seed": seed},
            logs=runtime,
        )
        checks: list[CheckResult] = []
        if run.method_end is not None:
            run.say("grading")
            checks = evaluate_all(_resolve_specs(run, stats), ctx)
            if inspect.isawaitable(checks):  # tolerate an async grader
                checks = asyncio.run(checks)  # type: ignore[arg-type]
        charts = _charts(run, prom, phases) if run.method_end is not None else []
        timeline = _timeline(run, phases) if run.method_end is not None else None
    finally:
        prom.close()

    finished_at = _now()
    steady_held = all(part.get("held", False) for part in run.steady.values()) and bool(
        run.steady.get("after")
    )
    required_ok = bool(checks) and all(c.passed for c in checks if c.required)
    traffic = {name: summarize(obs) for name, obs in sorted(run.recorder.observations.items())}
    if stats:
        traffic["stats"] = stats
    if run.runner.waits:
        traffic["waits"] = run.runner.waits
    result = RunResult(
        scenario=scenario.name,
        title=scenario.title,
        description=scenario.description,
        seed=seed,
        params=dict(scenario.parameters),
        runtime=runtime.name,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=(finished_at - started_at).total_seconds(),
        phases=list(phases.values()),
        steady_state=run.steady,
        checks=checks,
        charts=charts,
        score=sum(c.points for c in checks),
        max_score=sum(c.max_points for c in checks),
        passed=required_ok and steady_held and not run.errors,
        errors=run.errors,
        mode=claimed,
        settings=in_force,
        flaws=provenance.flaws,
        traffic=traffic,
        provenance=provenance,
        client_addresses=_client_addresses(scenario, net),
        teaches=scenario.teaches.strip(),
        prometheus_url=endpoints.prometheus,
        timeline=timeline,
    )
    if tags is not None and tags.assignment is not None and tags.seal_key is not None:
        result = seal_result(result, tags.seal_key, tags.assignment.key_id)
    if out_dir is not None:
        render_run(result, out_dir)
    return result


def _mode_text(mode: str, in_force: Mapping[str, Mapping[str, str]]) -> str:
    if mode != "custom":
        return mode
    shown = "; ".join(
        f"{s}: {', '.join(f'{k}={v}' for k, v in env.items())}" for s, env in in_force.items()
    )
    return f"weakened (custom): {shown}"


def _client_addresses(scenario: Scenario, net: ClientAddresses | None) -> dict[str, str]:
    """For the report: the address the gateway saw for each drill address."""
    if net is None:
        return {}
    shared = "the engine's port proxy (shared)"
    return {ip: net.source(ip) or shared for ip in drill_addresses(scenario)}


def new_seed() -> int:
    return secrets.randbelow(1_000_000)


# --- selftest: hardened passes, weakened fails where it should ------------------------------


@dataclass
class SelftestOutcome:
    scenario: str
    hardened: RunResult | None
    weakened: RunResult | None
    hardened_ok: bool
    weakened_ok: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.hardened_ok and self.weakened_ok


def guarded_still_passing(result: RunResult) -> list[str]:
    """Checks that guard a protection yet passed with that protection switched off."""
    return [c.id for c in result.checks if c.guards and c.passed]


def run_selftest(
    scenario: Scenario,
    runtime: Runtime,
    *,
    seed: int,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    tags: RunTags | None = None,
) -> SelftestOutcome:
    """Run ``scenario`` hardened (every check must pass), then with its ``weaken`` settings
    (every check with ``guards`` must fail, or the check proves nothing); restores defaults."""
    say = progress or _quiet
    problems: list[str] = []
    hardened = run_scenario(
        scenario,
        runtime,
        seed=seed,
        out_dir=out_dir / f"{scenario.name}-hardened" if out_dir else None,
        progress=progress,
        tags=tags,
    )
    hardened_ok = hardened.passed and hardened.mode == "hardened"
    if hardened.mode != "hardened":
        problems.append(f"the hardened run had settings in force: {hardened.settings}")
    elif not hardened_ok:
        failed = [c.id for c in hardened.checks if not c.passed]
        problems.append(
            f"hardened run failed: checks {', '.join(failed) or 'none'}; "
            f"errors {'; '.join(hardened.errors) or 'none'}"
        )
    weakened: RunResult | None = None
    weakened_ok = False
    if not scenario.weaken:
        problems.append("the scenario has no `weaken` settings")
    elif not scenario.guarded_checks:
        problems.append("the scenario has no check with `guards`")
    else:
        try:
            for service, env in scenario.weaken.items():
                say(f"weaken {service}: {env}")
            runtime.reconfigure_many(scenario.weaken)
            weakened = run_scenario(
                scenario,
                runtime,
                seed=seed,
                out_dir=out_dir / f"{scenario.name}-weakened" if out_dir else None,
                progress=progress,
                mode="weakened",
                overlay=scenario.weaken,
                tags=tags,
            )
        finally:
            say(f"restore {', '.join(scenario.weaken)} defaults")
            try:
                runtime.reconfigure_many(dict.fromkeys(scenario.weaken))
            except RuntimeError_ as exc:
                problems.append(f"restoring {', '.join(scenario.weaken)}: {exc}")
        survivors = guarded_still_passing(weakened)
        missing = [c for c in scenario.guarded_checks if c not in {r.id for r in weakened.checks}]
        weakened_ok = not survivors and not missing
        if survivors:
            problems.append(f"weakened run: guarded checks still passed: {', '.join(survivors)}")
        if missing:
            problems.append(f"weakened run: guarded checks not evaluated: {', '.join(missing)}")
    return SelftestOutcome(
        scenario=scenario.name,
        hardened=hardened,
        weakened=weakened,
        hardened_ok=hardened_ok,
        weakened_ok=weakened_ok,
        problems=problems,
    )
