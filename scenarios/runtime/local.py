"""The local runtime: the platform as plain processes on this machine.

redis-server, a moto DynamoDB server, Prometheus and the six services (``python -m cnop.run
NAME``, or on Linux forks of one interpreter that imported them once: ``cnop.launch``), each in
its own session so a whole process group can be signalled (kill, stop, pause)
and so Ctrl-C in the learner's terminal never takes the sandbox down by accident. What is running
is recorded in ``state.json`` in the sandbox's home; every command reads it, so `lab down` in a
new shell finds the processes `lab up` left in the background.

moto keeps DynamoDB in memory. A real DynamoDB keeps its data through an outage, so our moto
wrapper journals every acknowledged write to ``data/dynamodb.journal`` and replays it when it
starts (:mod:`cnop.core.moto_server`): a ``kill -9`` from anywhere loses nothing, and
``lab up --persist`` keeps the journal (and Redis's files) across `lab down`/`lab up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from scenarios.config import LabConfig
from scenarios.runtime.base import (
    INFRA,
    SERVICES,
    ClientAddresses,
    ComponentStatus,
    Endpoints,
    FlawLayer,
    Runtime,
    RuntimeError_,
    check_settings,
    fault_flag_key,
    fault_flag_pattern,
    normalise_flaws,
    service_layers,
    switch_flaws_in,
)
from scenarios.runtime.promconfig import RULES, local_jobs, render_prometheus_config
from scenarios.runtime.sandbox import SandboxLock, read_state

COMPONENTS = (*INFRA, *SERVICES)
STATE_VERSION = 1
CRASH_TAIL_LINES = 5
LOG_TAIL_LINES = 20
START_TIMEOUT_SECONDS = 30.0
# Switching flaws may restart all six services at once, which compete for the CPU.
FLAW_RESTART_TIMEOUT_SECONDS = 90.0
LOG_ROTATE_BYTES = 20 * 1024 * 1024
INSTALL_HINTS = {
    "redis": "sudo apt-get install -y redis-server",
    "prometheus": "sudo apt-get install -y prometheus",
}
DYNAMODB_JOURNAL = "dynamodb.journal"
# Snapshots of earlier versions of the lab; a fresh sandbox removes them.
OLD_DYNAMODB_SNAPSHOTS = ("dynamodb.json", "dynamodb-restart.json")

_REDIS_TS = re.compile(r"^\d+:[A-Z] (\d{1,2} \w{3} \d{4} \d{2}:\d{2}:\d{2}\.\d{3})")
_LOGFMT_TS = re.compile(r"\bts=(\S+)")


class LocalRuntime(Runtime):
    """Runs one sandbox (one ``LabConfig.home``) as local processes."""

    name = "local"

    def __init__(self, config: LabConfig | None = None) -> None:
        self.config = config or LabConfig()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = SandboxLock(self.config.home)

    # ================================================================ lifecycle
    def up(
        self, *, persist: bool = False, timeout: float = 60.0, flaws: FlawLayer | None = None
    ) -> Endpoints:
        cfg = self.config
        wanted_flaws = normalise_flaws(flaws or {})
        with self._locked():
            old = self._load_state()
            if old is not None:
                alive = [n for n in COMPONENTS if self._pid_state(old, n) is not None]
                if alive:
                    raise RuntimeError_(
                        f"the platform is already running ({old.get('runtime', 'local')} runtime, "
                        f"since {old.get('started_at', '?')}, home {cfg.home}); "
                        "`lab down` stops it"
                    )
                cfg.state_file.unlink(missing_ok=True)
            binaries = self._check_binaries()
            self._check_ports_free()
            cfg.ensure_dirs()
            self._prepare_data(persist)
            self._rotate_logs()
            self._write_prometheus_config()
            secret = cfg.jwt_secret()
            state: dict[str, Any] = {
                "runtime": self.name,
                "version": STATE_VERSION,
                "started_at": _now_iso(),
                "persist": persist,
                "home": str(cfg.home),
                "host": cfg.host,
                "ports": cfg.ports(),
                "metrics_ports": cfg.metrics_ports(),
                "table_prefix": cfg.table_prefix,
                # What `lab up` was given stays with the sandbox: a service a drill restarts
                # later comes back with it even if the variable is gone from that shell.
                "service_env": dict(cfg.service_env),
                "binaries": binaries,
                "components": {},
                "overrides": {},
                "flaws": wanted_flaws,  # security/flaws.yaml, switched on at start
            }
            self._save_state(state)  # early, so `lab down` can clean up a half-started sandbox
            began = time.monotonic()
            deadline = began + timeout
            phases: dict[str, float] = {}
            try:
                # Services start together with Redis and moto: their imports take longer than
                # moto's start-up (which replays the journal before it listens). One that loses
                # the race (its table bootstrap finds no DynamoDB) exits and is started again.
                self._start_components([*INFRA, *SERVICES], state, secret)
                self._save_state(state)
                self._wait_ready(["redis", "dynamodb"], state, deadline)
                phases["infra_ready"] = time.monotonic() - began
                self._wait_ready(
                    [*SERVICES, "prometheus"], state, deadline, respawn=set(SERVICES), secret=secret
                )
                phases["ready"] = time.monotonic() - began
                state["startup_seconds"] = {k: round(v, 2) for k, v in phases.items()}
                self._save_state(state)
            except BaseException as exc:
                self._terminate(state, list(reversed(COMPONENTS)))
                cfg.state_file.unlink(missing_ok=True)
                if isinstance(exc, RuntimeError_):
                    raise
                if isinstance(exc, KeyboardInterrupt):
                    raise RuntimeError_("interrupted; everything started was stopped") from None
                raise RuntimeError_(f"lab up failed: {exc}") from exc
            return self._endpoints(state)

    def down(self) -> None:
        with self._locked():
            state = self._load_state()
            if state is None:
                return
            self._terminate(state, list(SERVICES))
            # The journal is on disk already: stopping moto loses nothing it acknowledged.
            self._terminate(state, ["prometheus", "dynamodb", "redis"])
            self.config.state_file.unlink(missing_ok=True)

    def is_up(self) -> bool:
        state = self._load_state()
        return state is not None and any(self._pid_state(state, n) is not None for n in COMPONENTS)

    def status(self) -> list[ComponentStatus]:
        state = self._load_state()
        if state is None:
            return [ComponentStatus(name=n, state="stopped") for n in COMPONENTS]

        def one(name: str) -> ComponentStatus:
            entry = state["components"].get(name) or {}
            proc = self._pid_state(state, name)
            url = self._component_url(state, name)
            if proc is None:
                if entry.get("stopped") or not entry:
                    return ComponentStatus(name=name, state="stopped", ready=False, url=url)
                child = self._children.get(entry.get("pid") or -1)
                return ComponentStatus(
                    name=name,
                    state="exited",
                    ready=False,
                    url=url,
                    exit_code=child.returncode if child is not None else None,
                    last_lines=tuple(self._tail(name, CRASH_TAIL_LINES).splitlines()),
                )
            if proc in ("T", "t"):
                return ComponentStatus(name, "paused", entry.get("pid"), False, url)
            with httpx.Client(timeout=1.0) as client:
                ready = self._probe(name, state, client)
            return ComponentStatus(name, "running", entry.get("pid"), ready, url)

        with ThreadPoolExecutor(max_workers=len(COMPONENTS)) as pool:
            return list(pool.map(one, COMPONENTS))

    def memory(self) -> dict[str, int]:
        state = self._load_state()
        if state is None:
            return {}
        found: dict[str, int] = {}
        for name in COMPONENTS:
            if self._pid_state(state, name) is None:
                continue
            try:
                proc = psutil.Process(int(state["components"][name]["pid"]))
                family = [proc, *proc.children(recursive=True)]
                found[name] = sum(_memory_held(p) for p in family)
            except psutil.Error:
                continue  # gone between the two looks: not running
        return found

    def endpoints(self) -> Endpoints:
        state = self._load_state()
        if state is None:
            cfg = self.config
            state = {"host": cfg.host, "ports": cfg.ports()}
        return self._endpoints(state)

    def client_addresses(self, drill_addresses: Collection[str]) -> ClientAddresses:
        """Every loopback address reaches the gateway as it is, where the machine has it: Linux
        routes all of 127.0.0.0/8 to lo, macOS and the BSDs only 127.0.0.1 unless aliased."""
        missing = unbindable(drill_addresses)
        if missing:
            raise RuntimeError_(
                f"this machine lacks the loopback address(es) {', '.join(missing)} the drill's "
                "clients send from; add them (macOS, until the next reboot): "
                f"for a in {' '.join(missing)}; do sudo ifconfig lo0 alias $a up; done"
            )
        return ClientAddresses(gateway=self.endpoints().gateway)

    # ================================================================ process faults
    def kill(self, name: str) -> None:
        self._signal_component(name, hard=True)

    def stop(self, name: str) -> None:
        self._signal_component(name, hard=False)

    def start(self, name: str) -> None:
        self._check_name(name)
        with self._locked():
            state = self._require_state()
            proc = self._pid_state(state, name)
            if proc in ("T", "t"):
                raise RuntimeError_(f"{name} is paused; resume it instead of starting it")
            if proc is None:
                secret = self.config.jwt_secret()
                self._start_components([name], state, secret)
                self._save_state(state)
        self._wait_ready([name], state, time.monotonic() + START_TIMEOUT_SECONDS)

    def pause(self, name: str) -> None:
        self._send_running(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self._send_running(name, signal.SIGCONT)

    def reconfigure(self, name: str, env: Mapping[str, str] | None) -> None:
        self.reconfigure_many({name: env})

    def reconfigure_many(self, changes: Mapping[str, Mapping[str, str] | None]) -> None:
        self._restart_with("overrides", changes)

    def configure(self, name: str, env: Mapping[str, str] | None) -> None:
        self._restart_with("config", {name: env})

    def _restart_with(self, layer: str, changes: Mapping[str, Mapping[str, str] | None]) -> None:
        """Set one settings layer of some services (``overrides``: a drill's; ``config``: the
        student's ``lab config``) and restart just those, together."""
        for name, env in changes.items():
            check_settings(name, env)
        if not changes:
            return
        with self._locked():
            state = self._require_state()
            running = [name for name in changes if self._pid_state(state, name) is not None]
            restart = self._set_layer(state.setdefault(layer, {}), changes, running)
            self._save_state(state)
        self._restart_together(restart, START_TIMEOUT_SECONDS)

    def set_flaws(self, flaws: FlawLayer) -> list[str]:
        wanted = normalise_flaws(flaws)  # a bad layer is refused before the lock is taken
        with self._locked():
            state = self._require_state()
            changed = switch_flaws_in(state, wanted)
            self._save_state(state)
        self._restart_together(changed, FLAW_RESTART_TIMEOUT_SECONDS)
        return changed

    def _restart_together(self, names: list[str], timeout: float) -> None:
        """Stopped together, started together and waited for together: several services
        restart in about the time of one."""
        if not names:
            return
        with self._locked():
            state = self._require_state()
            self._terminate(state, names)
            self._start_components(names, state, self.config.jwt_secret())
            self._save_state(state)
        self._wait_ready(names, state, time.monotonic() + timeout)

    # ================================================================ fault flags / Redis
    def set_fault(
        self, service: str, fault: str, params: Mapping[str, Any], ttl_seconds: int
    ) -> None:
        key = fault_flag_key(service, fault, ttl_seconds)
        with self._redis() as client:
            client.set(key, json.dumps(dict(params)), ex=int(ttl_seconds))

    def clear_faults(self, service: str | None = None) -> int:
        pattern = fault_flag_pattern(service)
        with self._redis() as client:
            keys = list(client.scan_iter(match=pattern, count=500))
            return int(client.delete(*keys)) if keys else 0

    def clear_state_keys(self) -> int:
        with self._redis() as client:
            keys = [
                k
                for k in client.scan_iter(match="cnop:*", count=500)
                if not k.startswith("cnop:revoked:")
            ]
            deleted = 0
            for i in range(0, len(keys), 500):
                deleted += int(client.delete(*keys[i : i + 500]))
            return deleted

    # ================================================================ logs
    def log_lines(self, name: str, since: datetime | None = None) -> Iterator[str]:
        self._check_name(name)
        path = self.config.log_file(name)
        if not path.exists():
            return
        include = since is None
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                line = raw.rstrip("\n")
                if since is not None:
                    stamp = _line_timestamp(line)
                    if stamp is not None:
                        include = stamp >= since
                if include:
                    yield line

    def log_path(self, name: str) -> Path:
        self._check_name(name)
        return self.config.log_file(name)

    # ================================================================ internals: state
    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return self._lock.hold()

    def _load_state(self) -> dict[str, Any] | None:
        state = read_state(self.config.state_file)
        if state is None:
            return None
        if state.get("runtime") != self.name:
            raise RuntimeError_(
                f"the sandbox in {self.config.home} is run by the {state.get('runtime')} runtime"
            )
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        path = self.config.state_file
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    def _require_state(self) -> dict[str, Any]:
        state = self._load_state()
        if state is None:
            raise RuntimeError_("the platform is not running; `lab up` starts it")
        return state

    def _check_name(self, name: str) -> None:
        if name not in COMPONENTS:
            raise RuntimeError_(f"unknown component {name!r}; one of: {', '.join(COMPONENTS)}")

    # ================================================================ internals: processes
    def _check_binaries(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for component, binary in (
            ("redis", self.config.redis_server_bin),
            ("prometheus", self.config.prometheus_bin),
        ):
            path = shutil.which(binary)
            if path is None:
                raise RuntimeError_(
                    f"{binary} is not installed (not found on PATH); "
                    f"install it with: {INSTALL_HINTS[component]}"
                )
            found[component] = path
        return found

    def _check_ports_free(self) -> None:
        cfg = self.config
        wanted = {**cfg.ports(), **{f"{s} metrics": p for s, p in cfg.metrics_ports().items()}}
        for what, port in wanted.items():
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((cfg.host, port))
                except OSError:
                    raise RuntimeError_(
                        f"port {port} ({what}) on {cfg.host} is in use; stop what uses it or "
                        "shift every port with `lab up --port-offset N` (CNOP_LAB_PORT_OFFSET)"
                    ) from None

    def _prepare_data(self, persist: bool) -> None:
        data = self.config.data_dir
        (data / "redis").mkdir(parents=True, exist_ok=True)
        if persist:
            return
        # A fresh sandbox: no Redis keys, no tables, no old metrics.
        for sub in ("redis", "prometheus"):
            shutil.rmtree(data / sub, ignore_errors=True)
        (data / "redis").mkdir(parents=True, exist_ok=True)
        for name in (DYNAMODB_JOURNAL, *OLD_DYNAMODB_SNAPSHOTS):
            (data / name).unlink(missing_ok=True)

    def _rotate_logs(self) -> None:
        for name in COMPONENTS:
            path = self.config.log_file(name)
            if path.exists() and path.stat().st_size > LOG_ROTATE_BYTES:
                path.replace(path.with_suffix(".log.1"))

    def _write_prometheus_config(self) -> None:
        cfg = self.config
        text = render_prometheus_config(
            cfg.monitoring_dir,
            local_jobs(cfg.host, cfg.metrics_ports(), cfg.port("prometheus")),
            runtime=self.name,
            sandbox=str(cfg.home),
            scrape_interval=cfg.scrape_interval,
            rule_files=[cfg.monitoring_dir / RULES]
            if (cfg.monitoring_dir / RULES).exists()
            else [],
        )
        cfg.prometheus_config_file.write_text(text)

    def _command(
        self, name: str, state: dict[str, Any], secret: str
    ) -> tuple[list[str], dict[str, str]]:
        cfg = self.config
        host = state["host"]
        ports = state["ports"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNOP_")}
        env["PYTHONUNBUFFERED"] = "1"
        data = cfg.data_dir
        binaries = state.get("binaries") or {}
        if name == "redis":
            env["TZ"] = "UTC"  # its log timestamps are local time; `lab logs --since` reads UTC
            argv = [
                binaries.get("redis", cfg.redis_server_bin),
                "--port",
                str(ports["redis"]),
                "--bind",
                host,
                "--dir",
                str(data / "redis"),
                "--daemonize",
                "no",
                "--logfile",
                "",
            ]
            # The append-only file is always on, so a crashed Redis comes back with its keys
            # (revoked tokens above all); without --persist `lab up` empties the folder first.
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
            argv += ["--save", "1 1"] if state.get("persist") else ["--save", ""]
            return argv, env
        if name == "dynamodb":
            port = str(ports["dynamodb"])
            journal = str(self.config.data_dir / DYNAMODB_JOURNAL)
            argv = [sys.executable, "-m", "cnop.core.moto_server", "-H", host, "-p", port]
            return [*argv, "--journal", journal], env
        if name == "prometheus":
            return [
                binaries.get("prometheus", cfg.prometheus_bin),
                f"--config.file={cfg.prometheus_config_file}",
                f"--storage.tsdb.path={data / 'prometheus'}",
                "--storage.tsdb.retention.time=2d",
                f"--web.listen-address={host}:{ports['prometheus']}",
                "--web.enable-lifecycle",
            ], env
        urls = {s: f"http://{host}:{ports[s]}" for s in SERVICES}
        env.update(
            {
                "CNOP_HOST": host,
                "CNOP_PORT": str(ports[name]),
                "CNOP_METRICS_PORT": str(state["metrics_ports"][name]),
                "CNOP_REDIS_URL": f"redis://{host}:{ports['redis']}/0",
                "CNOP_DYNAMODB_ENDPOINT": f"http://{host}:{ports['dynamodb']}",
                "CNOP_JWT_SECRET": secret,
                "CNOP_INTERNAL_SECRET": cfg.internal_secret(),
                "CNOP_TABLE_PREFIX": state["table_prefix"],
                "CNOP_USER_URL": urls["user"],
                "CNOP_INVENTORY_URL": urls["inventory"],
                "CNOP_ORDER_URL": urls["order"],
                "CNOP_AUTH_URL": urls["auth"],
                "CNOP_INSIGHTS_URL": urls["insights"],
                "CNOP_CORS_ORIGINS": json.dumps(cfg.cors_origins),
                "CNOP_LOG_LEVEL": cfg.service_log_level,
            }
        )
        env.update(state.get("service_env", cfg.service_env))
        env.update(service_layers(cfg.home, state, name))
        return [sys.executable, "-m", "cnop.run", name], env

    def _spawn(self, name: str, state: dict[str, Any], secret: str) -> dict[str, Any]:
        argv, env = self._command(name, state, secret)
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        with self.config.log_file(name).open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - argv built from settings, no shell
                argv,
                env=env,
                cwd=self.config.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._children[proc.pid] = proc
        return _entry(proc.pid)

    def _start_components(self, names: Collection[str], state: dict[str, Any], secret: str) -> None:
        """Start components into ``state``: Redis, moto and Prometheus a process each (first:
        they start while the services import), the services forked from one interpreter that
        imported them once (``cnop.launch``) where the config says so, else a
        ``python -m cnop.run`` each.

        The forked children are not ours to reap (the launcher exits once they are forked), so
        `lab status` reports a crashed one without its exit code; its log's last lines remain.
        """
        forked = [n for n in names if n in SERVICES] if self.config.fork_services else []
        for name in names:
            if name not in forked:
                state["components"][name] = self._spawn(name, state, secret)
        if forked:
            self._fork_services(forked, state, secret)

    def _fork_services(self, names: list[str], state: dict[str, Any], secret: str) -> None:
        orders = []
        for name in names:
            _, env = self._command(name, state, secret)
            log = str(self.config.log_file(name))
            orders.append({"service": name, "env": env, "log": log, "cwd": str(self.config.home)})
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        # Modules read some variables when imported: the launcher has the services' own.
        base = {k: v for k, v in orders[0]["env"].items() if not k.startswith("CNOP_")}
        try:
            done = subprocess.run(
                [sys.executable, "-m", "cnop.launch"],
                input=json.dumps(orders).encode(),
                capture_output=True,
                env=base,
                cwd=self.config.home,
                timeout=START_TIMEOUT_SECONDS,
                check=False,
            )
            pids = json.loads(done.stdout) if done.returncode == 0 else {}
        except (subprocess.TimeoutExpired, ValueError) as exc:
            raise RuntimeError_(f"the service launcher (cnop.launch) failed: {exc}") from exc
        if set(pids) != set(names):
            detail = done.stderr.decode(errors="replace").strip()[-2000:]
            raise RuntimeError_(
                f"the service launcher (cnop.launch) exited {done.returncode}: {detail}"
                "\n(CNOP_LAB_FORK_SERVICES=false starts each service in an interpreter of its own)"
            )
        for name in names:
            state["components"][name] = _entry(int(pids[name]))

    def _pid_state(self, state: dict[str, Any], name: str) -> str | None:
        """The process's /proc state letter (R, S, T...), or None when it is gone."""
        entry = (state.get("components") or {}).get(name)
        if not entry or not entry.get("pid"):
            return None
        return _proc_state(entry["pid"], entry.get("created"), self._children)

    def _signal_group(self, state: dict[str, Any], name: str, sig: int) -> bool:
        if self._pid_state(state, name) is None:
            return False
        pid = int(state["components"][name]["pid"])
        try:
            os.killpg(pid, sig)  # the session leader's pid is the group id
        except ProcessLookupError:
            return False
        except PermissionError as exc:
            raise RuntimeError_(f"cannot signal {name} (pid {pid}): {exc}") from exc
        return True

    def _terminate(self, state: dict[str, Any], names: Iterable[str]) -> None:
        """SIGTERM the groups, wait, SIGKILL what is left; returns when all are gone."""
        names = [n for n in names if self._pid_state(state, n) is not None]
        for name in names:
            self._signal_group(state, name, signal.SIGTERM)
            self._signal_group(state, name, signal.SIGCONT)  # a paused process must see it
        deadline = time.monotonic() + self.config.stop_grace_seconds
        while time.monotonic() < deadline and any(
            self._pid_state(state, n) is not None for n in names
        ):
            time.sleep(0.05)
        for name in names:
            self._signal_group(state, name, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            self._pid_state(state, n) is not None for n in names
        ):
            time.sleep(0.05)
        left = [n for n in names if self._pid_state(state, n) is not None]
        if left:
            raise RuntimeError_(f"could not stop {', '.join(left)}")

    def _signal_component(self, name: str, *, hard: bool) -> None:
        self._check_name(name)
        with self._locked():
            state = self._require_state()
            if self._pid_state(state, name) is None:
                state["components"].setdefault(name, {})["stopped"] = True
                self._save_state(state)
                return
            if hard:
                self._signal_group(state, name, signal.SIGKILL)
                self._signal_group(state, name, signal.SIGCONT)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and self._pid_state(state, name) is not None:
                    time.sleep(0.02)
            else:
                self._terminate(state, [name])
            state["components"][name]["stopped"] = True
            self._save_state(state)

    def _send_running(self, name: str, sig: int) -> None:
        self._check_name(name)
        state = self._require_state()
        if not self._signal_group(state, name, sig):
            raise RuntimeError_(f"{name} is not running")

    def _resume_if_paused(self, state: dict[str, Any], name: str) -> None:
        if self._pid_state(state, name) in ("T", "t"):
            self._signal_group(state, name, signal.SIGCONT)

    # ================================================================ internals: readiness
    def _component_url(self, state: dict[str, Any], name: str) -> str:
        host, port = state["host"], state["ports"][name]
        if name == "redis":
            return f"redis://{host}:{port}/0"
        return f"http://{host}:{port}"

    def _endpoints(self, state: dict[str, Any]) -> Endpoints:
        host, ports = state["host"], state["ports"]
        return Endpoints(
            gateway=f"http://{host}:{ports['gateway']}",
            prometheus=f"http://{host}:{ports['prometheus']}",
            redis=f"redis://{host}:{ports['redis']}/0",
            services={s: f"http://{host}:{ports[s]}" for s in SERVICES},
        )

    def _probe(self, name: str, state: dict[str, Any], client: httpx.Client) -> bool:
        host, port = state["host"], state["ports"][name]
        try:
            if name == "redis":
                with socket.create_connection((host, port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(64).startswith(b"+PONG")
            if name == "dynamodb":
                return client.get(f"http://{host}:{port}/").status_code < 500
            if name == "prometheus":
                return client.get(f"http://{host}:{port}/-/ready").status_code == 200
            return client.get(f"http://{host}:{port}/health/ready").status_code == 200
        except (OSError, httpx.HTTPError):
            return False

    def _wait_ready(
        self,
        names: list[str],
        state: dict[str, Any],
        deadline: float,
        *,
        respawn: set[str] | None = None,
        secret: str = "",
    ) -> None:
        """Poll until every component answers; a dead one fails fast unless it may respawn once."""
        pending = list(names)
        respawn = set(respawn or ())
        with httpx.Client(timeout=0.5) as client:
            while pending:
                for name in list(pending):
                    if self._pid_state(state, name) is None:
                        if name in respawn:
                            respawn.discard(name)
                            self._start_components([name], state, secret)
                            self._save_state(state)
                            continue
                        raise RuntimeError_(
                            f"{name} exited while starting; last lines of "
                            f"{self.config.log_file(name)}:\n{self._tail(name)}"
                        )
                    if self._probe(name, state, client):
                        pending.remove(name)
                if not pending:
                    return
                if time.monotonic() > deadline:
                    first = pending[0]
                    raise RuntimeError_(
                        f"not ready in time: {', '.join(pending)}; last lines of "
                        f"{self.config.log_file(first)}:\n{self._tail(first)}"
                    )
                time.sleep(self.config.ready_poll_seconds)

    def _tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        path = self.config.log_file(name)
        try:
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                tail = deque(handle, maxlen=lines)
        except OSError:
            return "(no log)"
        return "".join(tail).rstrip() or "(empty log)"

    # ================================================================ internals: Redis, DynamoDB
    @contextlib.contextmanager
    def _redis(self) -> Iterator[Any]:
        import redis

        state = self._require_state()
        client = redis.Redis(
            host=state["host"],
            port=state["ports"]["redis"],
            socket_timeout=2,
            socket_connect_timeout=2,
            decode_responses=True,
        )
        try:
            yield client
        except redis.RedisError as exc:
            raise RuntimeError_(f"redis: {exc}") from exc
        finally:
            client.close()


# ==================================================================== helpers
def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _memory_held(proc: psutil.Process) -> int:
    """The process's proportional set size where the system reports one (Linux): each page it
    shares (libraries, the services' common imports) counted once across its sharers, so the
    figures of a sandbox add up to the RAM it takes. The resident set counts every shared page
    in full in each process; it is the figure elsewhere."""
    try:
        return int(proc.memory_full_info().pss)
    except (AttributeError, psutil.AccessDenied):
        return int(proc.memory_info().rss)


def _entry(pid: int) -> dict[str, Any]:
    """What state.json records of a process just started."""
    return {"pid": pid, "created": _created(pid), "started_at": _now_iso(), "stopped": False}


def _created(pid: int) -> float | None:
    """The process's creation time: with the pid, it names one process, not a reused pid."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _proc_state(
    pid: int, created_at: float | None, children: Mapping[int, subprocess.Popen[bytes]]
) -> str | None:
    """The state letter: "T" for a stopped (paused) process, "R" or "S" for a live one, None
    when it is gone.

    psutil reads the process table on Linux, macOS and the BSDs alike.
    """
    child = children.get(pid)
    if child is not None and child.poll() is not None:
        return None  # our own child, exited (and now reaped)
    try:
        proc = psutil.Process(pid)
        created, status = proc.create_time(), proc.status()
    except psutil.Error:
        return None
    if created_at is not None and abs(created - float(created_at)) > 0.05:
        return None  # the pid was reused by an unrelated process
    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return None
    if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
        return "T"
    return "R" if status == psutil.STATUS_RUNNING else "S"


def _line_timestamp(line: str) -> datetime | None:
    """The time of a log line: JSON ``timestamp``, Prometheus ``ts=``, or Redis's format."""
    text = line.lstrip()
    if text.startswith("{"):
        try:
            stamp = json.loads(text).get("timestamp")
        except (ValueError, AttributeError):
            stamp = None
        if isinstance(stamp, str):
            return _parse_iso(stamp)
    match = _LOGFMT_TS.search(line)
    if match:
        return _parse_iso(match.group(1))
    match = _REDIS_TS.match(line)
    if match:
        try:
            return datetime.strptime(match.group(1), "%d %b %Y %H:%M:%S.%f").replace(tzinfo=UTC)
        except ValueError:
            return None
    return None


def _parse_iso(stamp: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def unbindable(addresses: Iterable[str]) -> list[str]:
    """The addresses a client socket cannot bind here, in order."""
    missing = []
    for address in dict.fromkeys(addresses):
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                missing.append(address)
    return missing
