"""`lab up/down/status/logs/walkthrough`: start, inspect and try out a sandbox.

Commands act on the sandbox in ``CNOP_LAB_HOME`` (default ``./.lab``); after `lab up` the runtime
is recorded there, so the other commands need no ``--runtime``. A usage error raises
:class:`UsageError` (exit 2), a platform that cannot answer :class:`RuntimeError_` (exit 3);
lab.py turns them into one line on stderr. ``--json`` shapes: docs/cli.md.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import time
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from scenarios.accounts import registration_body
from scenarios.cli_student import prepare_challenge
from scenarios.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    Failed,
    JsonOption,
    UsageError,
    finish,
    unknown_name,
)
from scenarios.config import LabConfig
from scenarios.runtime import RUNTIMES, current_runtime, get_runtime
from scenarios.runtime.base import INFRA, SERVICES, Runtime, RuntimeError_
from scenarios.runtime.hidden import remove_challenge

console = Console()
COMPONENTS = (*INFRA, *SERVICES)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("logs")(logs)
    app.command("walkthrough")(walkthrough)


def _spinner(text: str, quiet: bool) -> AbstractContextManager[object]:
    """A spinner on the terminal; none under ``--json`` (stdout holds only the object)."""
    return nullcontext() if quiet else console.status(text)


def _running(config: LabConfig) -> Runtime:
    runtime = current_runtime(config)
    if runtime is None or not runtime.is_up():
        raise RuntimeError_(
            f"the platform is not running (sandbox {config.home}); `lab up` starts it"
        )
    return runtime


# ==================================================================== up / down / status
def up(
    runtime: Annotated[
        str | None, typer.Option(help="auto, local or docker (default: CNOP_LAB_RUNTIME or auto)")
    ] = None,
    persist: Annotated[
        bool, typer.Option(help="keep Redis and DynamoDB data across `lab down` / `lab up`")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait until ready")] = 60.0,
    port_offset: Annotated[
        int | None, typer.Option(min=0, help="add N to every port (CNOP_LAB_PORT_OFFSET)")
    ] = None,
    flaw: Annotated[
        list[str] | None,
        typer.Option("--flaw", help="switch this flaw on from the start (repeatable; `lab flaws`)"),
    ] = None,
    assignment: Annotated[
        Path | None,
        typer.Option(help="a challenge assignment: start with its hidden settings"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start the platform in the background and print its URLs."""
    from scenarios.cli_flaws import check_names  # the flaw catalogue is optional to `lab up`
    from scenarios.flaws import flaw_layer

    flaws = flaw_layer(check_names(flaw)) if flaw else None
    config = LabConfig()
    if port_offset is not None:
        config = config.model_copy(update={"port_offset": port_offset})
    name = runtime or config.runtime
    if name not in RUNTIMES:
        raise UsageError(unknown_name("runtime", name, list(RUNTIMES)))
    existing = current_runtime(config)
    if existing is not None and existing.is_up():
        raise RuntimeError_(
            f"the platform is already running ({existing.name} runtime, sandbox {config.home}); "
            "`lab down` stops it"
        )
    chosen = get_runtime(name, config)
    challenge = prepare_challenge(config, assignment)
    started = time.perf_counter()
    try:
        with _spinner(f"starting the platform ({chosen.name} runtime)...", as_json):
            endpoints = chosen.up(persist=persist, timeout=timeout, flaws=flaws)
    except BaseException:
        remove_challenge(config.home)
        raise
    elapsed = time.perf_counter() - started
    if as_json:
        finish(
            "up",
            EXIT_OK,
            True,
            runtime=chosen.name,
            sandbox=str(config.home),
            persist=persist,
            seconds=round(elapsed, 3),
            endpoints={
                "gateway": endpoints.gateway,
                "prometheus": endpoints.prometheus,
                "redis": endpoints.redis,
                "services": dict(endpoints.services),
            },
        )
    console.print(
        f"[green]ready[/green] in {elapsed:.1f} s ({chosen.name} runtime"
        f"{', persistent' if persist else ''}; sandbox {config.home})"
    )
    if flaws:
        console.print(
            f"[red]flaws on[/red]: {', '.join(flaws)} (not the hardened platform; "
            "`lab reset` switches them off)",
            highlight=False,
        )
    table = Table(show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("URL")
    table.add_row("gateway (public API)", f"{endpoints.gateway}/api/v1")
    table.add_row("prometheus", endpoints.prometheus)
    table.add_row("redis", endpoints.redis)
    for service, url in endpoints.services.items():
        table.add_row(service, url)
    console.print(table)
    console.print("next: `lab walkthrough`, `lab status`, `lab logs gateway`; `lab down` stops it")
    if challenge:
        console.print(
            f"[bold]challenge {challenge}[/bold]: something is set wrong, and the settings are "
            "hidden. Run its drills, find out what from the metrics and logs (`lab query`, "
            "`lab logs`), fix it with `lab config set SERVICE KEY=VALUE`, run again."
        )


def down(as_json: JsonOption = False) -> None:
    """Stop every process or container of the sandbox."""
    config = LabConfig()
    runtime = current_runtime(config)
    if runtime is None:
        if not as_json:
            console.print(f"the platform is not running (sandbox {config.home})")
        finish("down", EXIT_OK, as_json, stopped=False, runtime=None, sandbox=str(config.home))
    with _spinner("stopping the platform...", as_json):
        runtime.down()
    if not as_json:
        console.print(f"[green]stopped[/green] ({runtime.name} runtime; sandbox {config.home})")
    finish("down", EXIT_OK, as_json, stopped=True, runtime=runtime.name, sandbox=str(config.home))


def status(as_json: JsonOption = False) -> None:
    """Show every component: state, pid, readiness, memory, URL. Exit 1 unless all are ready."""
    config = LabConfig()
    runtime = _running(config)
    rows = runtime.status()
    memory = runtime.memory()
    total = sum(memory.values())
    code = EXIT_OK if all(r.state == "running" and r.ready for r in rows) else EXIT_FAILED
    if as_json:
        components = [
            {
                "name": r.name,
                "state": r.state,
                "pid": r.pid,
                "ready": r.ready,
                "url": r.url,
                "exit_code": r.exit_code,
                "oom_killed": r.oom_killed,
                "memory_bytes": memory.get(r.name),
                "last_lines": list(r.last_lines),
            }
            for r in rows
        ]
        finish(
            "status",
            code,
            True,
            runtime=runtime.name,
            sandbox=str(config.home),
            components=components,
            memory_bytes_total=total,
        )
    table = Table(title=f"{runtime.name} runtime, sandbox {config.home}", header_style="bold")
    for column in ("component", "state", "pid", "ready", "memory", "url"):
        table.add_column(column, justify="right" if column == "memory" else "left")
    colours = {"running": "green", "paused": "yellow", "stopped": "red", "exited": "red"}
    for row in rows:
        colour = colours.get(row.state, "white")
        ready = "-" if row.ready is None else ("yes" if row.ready else "[red]no[/red]")
        table.add_row(
            row.name,
            f"[{colour}]{row.state}[/{colour}]",
            str(row.pid or "-"),
            ready,
            _mebibytes(memory[row.name]) if row.name in memory else "-",
            row.url or "-",
        )
    console.print(table)
    console.print(f"memory in use: {_mebibytes(total)} (the running components together)")
    for row in rows:
        if row.state == "exited":
            code = "" if row.exit_code is None else f" with exit code {row.exit_code}"
            if row.oom_killed:
                code += " (killed at its memory limit: out of memory)"
            console.print(
                f"[red]{row.name} exited{code} without `lab` stopping it[/red] "
                "(`lab reset` starts it again); the end of its log:",
                highlight=False,
            )
            for line in row.last_lines or ("(empty log)",):
                console.print(f"  {line}", markup=False, highlight=False)
    raise typer.Exit(code)


def _mebibytes(count: int) -> str:
    return f"{count / 2**20:.0f} MiB"


# ==================================================================== logs
def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``5m``, ``2h`` or ``1d``; ValueError for anything else."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_since(text: str) -> datetime:
    """``90s``, ``5m``, ``2h``, ``1d`` ago, or an ISO timestamp (UTC unless it says otherwise)."""
    if _DURATION.match(text.strip()):
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r}: give a duration like 30s, 5m, 2h, 1d or an ISO timestamp"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def logs(
    component: Annotated[
        str,
        typer.Argument(
            help=f"one of: {', '.join(COMPONENTS)}",
            autocompletion=lambda incomplete: [c for c in COMPONENTS if c.startswith(incomplete)],
        ),
    ],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="e.g. 5m, 1h or an ISO timestamp (default: since this sandbox's `lab up`)"
        ),
    ] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="last N lines")] = 100,
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help="only JSON lines with this event (repeatable)"),
    ] = None,
) -> None:
    """Print a component's log (JSON lines for the six services), from this sandbox's start."""
    if component not in COMPONENTS:
        raise UsageError(unknown_name("component", component, COMPONENTS))
    config = LabConfig()
    runtime = current_runtime(config) or get_runtime("local", config)
    # Log files outlive a sandbox (`lab down`, `lab up` appends): earlier sessions' lines would
    # mix into a lab's `grep`, so the default is the current sandbox's lifetime.
    start = parse_since(since) if since else runtime.sandbox_started_at()
    keep = LogFilter(frozenset(event or ()))
    out = sys.stdout
    shown = (kept for kept in map(keep, runtime.log_lines(component, start)) if kept is not None)
    for line in deque(shown, maxlen=lines):
        out.write(line + "\n")
    out.flush()
    if not follow:
        return
    log_path = getattr(runtime, "log_path", None)
    if log_path is None:
        raise RuntimeError_(f"--follow is not supported by the {runtime.name} runtime")
    _follow(log_path(component), keep)


class LogFilter:
    """What `lab logs` shows of a line: only the asked-for events, without uvicorn's
    ``color_message`` (the message again, with ANSI colour codes that garble a terminal)."""

    def __init__(self, events: frozenset[str]) -> None:
        self.events = events

    def __call__(self, line: str) -> str | None:
        if not line.lstrip().startswith("{"):
            return None if self.events else line
        try:
            doc = json.loads(line)
        except ValueError:
            return None if self.events else line
        if not isinstance(doc, dict):
            return None if self.events else line
        if self.events and doc.get("event") not in self.events:
            return None
        if "color_message" not in doc:
            return line
        doc.pop("color_message")
        return json.dumps(doc)  # the same form the services write


def _follow(path: Any, keep: LogFilter) -> None:
    """tail -f: print lines appended from now on until Ctrl-C (re-opens a rotated file)."""
    handle = None
    try:
        while True:
            if handle is None:
                try:
                    handle = path.open("r", encoding="utf-8", errors="replace")
                    handle.seek(0, 2)
                except FileNotFoundError:
                    time.sleep(0.25)
                    continue
            line = handle.readline()
            if line:
                kept = keep(line.rstrip("\n"))
                if kept is not None:
                    sys.stdout.write(kept + "\n")
                    sys.stdout.flush()
                continue
            try:
                rotated = path.stat().st_ino != _inode(handle)
            except FileNotFoundError:
                rotated = True
            if rotated:
                handle.close()
                handle = None
            time.sleep(0.2)
    except KeyboardInterrupt:
        return
    finally:
        if handle is not None:
            handle.close()


def _inode(handle: Any) -> int:
    return os.fstat(handle.fileno()).st_ino


# ==================================================================== walkthrough
class _Step:
    def __init__(self, client: httpx.Client, out: Console) -> None:
        self.client = client
        self.out = out
        self.taken: list[dict[str, Any]] = []

    def __call__(
        self, title: str, method: str, path: str, expect: int, **kwargs: Any
    ) -> dict[str, Any]:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RuntimeError_(f"{title}: {method} {path} failed: {exc}") from exc
        ok = response.status_code == expect
        mark = "[green]ok[/green]" if ok else "[red]FAILED[/red]"
        self.out.print(f"{mark} {title}: {method} /api/v1{path} -> {response.status_code}")
        self.taken.append(
            {
                "step": title,
                "method": method,
                "path": f"/api/v1{path}",
                "status": response.status_code,
            }
        )
        try:
            body = response.json()
        except ValueError:
            body = {"raw": response.text[:300]}
        if not ok:
            detail = (
                body.get("detail") or body.get("title") or body if isinstance(body, dict) else body
            )
            raise Failed(f"{title}: expected {expect}, got {response.status_code}: {detail}")
        return body if isinstance(body, dict) else {"data": body}


def walkthrough(
    gateway: Annotated[
        str | None, typer.Option(help="gateway base URL (default: the running sandbox's)")
    ] = None,
    asset: Annotated[str, typer.Option(help="asset to buy")] = "BTC",
    spend: Annotated[str, typer.Option(help="USD to spend on it")] = "100",
    as_json: JsonOption = False,
) -> None:
    """Register, log in, deposit 1000 USD, buy ~100 USD of BTC and show the portfolio."""
    base = gateway or _running(LabConfig()).endpoints().gateway
    out = Console(stderr=True) if as_json else console
    suffix = secrets.token_hex(4)
    username = f"walk_{suffix}"
    password = f"Walk-{suffix}9x"  # upper, lower, digit, symbol; 15 characters
    try:
        budget = Decimal(spend)
    except InvalidOperation:
        raise UsageError(f"--spend {spend!r} is not a number") from None
    out.rule(f"CNOP walkthrough via {base}")
    with httpx.Client(base_url=f"{base.rstrip('/')}/api/v1", timeout=15.0) as client:
        step = _Step(client, out)
        step(
            f"register {username}",
            "POST",
            "/auth/register",
            201,
            json=registration_body(username, password, first_name="Walk", last_name="Through"),
        )
        login = step(
            "log in", "POST", "/auth/login", 200, json={"username": username, "password": password}
        )
        token = login.get("access_token")
        if not token:
            raise RuntimeError_("log in: the response carries no access_token")
        client.headers["Authorization"] = f"Bearer {token}"
        step("deposit 1000.00 USD", "POST", "/balance/deposit", 201, json={"amount": "1000.00"})
        balance = step("balance", "GET", "/balance", 200)
        out.print(f"   balance: {balance.get('current_balance')} USD")
        detail = step(f"price of {asset}", "GET", f"/inventory/assets/{asset}", 200)
        price = Decimal(str((detail.get("data") or {}).get("price_usd") or "0"))
        if price <= 0:
            raise RuntimeError_(f"{asset} has no price")
        quantity = max(
            (budget / price).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN), Decimal("0.001")
        )
        out.print(f"   {asset} at {price} USD: buying {quantity} (~{budget} USD)")
        order = step(
            f"buy {quantity} {asset}",
            "POST",
            "/orders",
            201,
            json={"order_type": "market_buy", "asset_id": asset, "quantity": str(quantity)},
            headers={"Idempotency-Key": f"walk-{suffix}"},
        )
        data = order.get("data") or {}
        out.print(
            f"   order {data.get('order_id')}: {data.get('status')}, "
            f"total {data.get('total_amount')} USD"
        )
        portfolio = step("portfolio", "GET", "/portfolio", 200)
    if as_json:
        finish(
            "walkthrough",
            EXIT_OK,
            True,
            username=username,
            steps=step.taken,
            order=data,
            portfolio=portfolio,
        )
    table = Table(title=f"portfolio of {username}", header_style="bold")
    for column in ("asset", "quantity", "price", "value", "%"):
        table.add_column(column, justify="right" if column != "asset" else "left")
    for item in portfolio.get("assets", []):
        table.add_row(
            str(item.get("asset_id")),
            str(item.get("quantity")),
            str(item.get("current_price")),
            str(item.get("market_value")),
            str(item.get("percentage")),
        )
    table.add_row("USD", "", "", str(portfolio.get("usd_balance")), "")
    table.add_row("[bold]total[/bold]", "", "", f"[bold]{portfolio.get('total_value')}[/bold]", "")
    console.print(table)
    console.print("[green]walkthrough complete[/green]")
