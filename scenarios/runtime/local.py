"""The local runtime: the platform as plain processes on this machine.

redis-server, a moto DynamoDB server, Prometheus and the six services (``python -m cnop.run
NAME``), each in its own session so a whole process group can be signalled (kill, stop, pause)
and so Ctrl-C in the learner's terminal never takes the sandbox down by accident. What is running
is recorded in ``state.json`` in the sandbox's home; every command reads it, so `lab down` in a
new shell finds the processes `lab up` left in the background.

moto keeps DynamoDB in memory. A real DynamoDB keeps its data through an outage, so stopping or
killing the ``dynamodb`` component snapshots its tables first and starting it restores them;
``lab up --persist`` uses the same snapshot format across `lab down`/`lab up`.
"""

from __future__ import annotations

import base64
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
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from scenarios.config import LabConfig
from scenarios.runtime.base import (
    INFRA,
    SERVICES,
    ComponentStatus,
    Endpoints,
    FlawLayer,
    Runtime,
    RuntimeError_,
    fault_flag_key,
    fault_flag_pattern,
    flaw_env,
    normalise_flaws,
)
from scenarios.runtime.promconfig import RULES, local_jobs, render_prometheus_config
from scenarios.runtime.sandbox import SandboxLock, read_state

COMPONENTS = (*INFRA, *SERVICES)
STATE_VERSION = 1
LOG_TAIL_LINES = 20
START_TIMEOUT_SECONDS = 30.0
# Switching flaws may restart all six services at once, which compete for the CPU.
FLAW_RESTART_TIMEOUT_SECONDS = 90.0
LOG_ROTATE_BYTES = 20 * 1024 * 1024
INSTALL_HINTS = {
    "redis": "sudo apt-get install -y redis-server",
    "prometheus": "sudo apt-get install -y prometheus",
}
DYNAMODB_SNAPSHOT = "dynamodb.json"
DYNAMODB_RESTART_SNAPSHOT = "dynamodb-restart.json"

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
                # Without a snapshot to restore, services start together with Redis and moto:
                # their imports take longer than moto's start-up. One that loses the race (its
                # table bootstrap finds no DynamoDB) exits and is started once more.
                early = [] if persist else list(SERVICES)
                for name in [*INFRA, *early]:
                    state["components"][name] = self._spawn(name, state, secret)
                self._save_state(state)
                self._wait_ready(["redis", "dynamodb"], state, deadline)
                phases["infra_ready"] = time.monotonic() - began
                if persist:
                    restored = self._restore_dynamodb(state, cfg.data_dir / DYNAMODB_SNAPSHOT)
                    state["restored_items"] = restored
                    phases["restored"] = time.monotonic() - began
                    for name in SERVICES:
                        state["components"][name] = self._spawn(name, state, secret)
                    self._save_state(state)
                self._wait_ready(
                    [*SERVICES, "prometheus"], state, deadline, respawn=set(early), secret=secret
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
            problem: str | None = None
            self._terminate(state, list(SERVICES))
            if state.get("persist"):
                try:
                    self._resume_if_paused(state, "dynamodb")
                    data = self.config.data_dir
                    if self._pid_state(state, "dynamodb") is not None:
                        self._snapshot_dynamodb(state, data / DYNAMODB_SNAPSHOT)
                    elif (data / DYNAMODB_RESTART_SNAPSHOT).exists():
                        # Stopped by a drill: its data waits in the restart snapshot.
                        (data / DYNAMODB_RESTART_SNAPSHOT).replace(data / DYNAMODB_SNAPSHOT)
                except Exception as exc:  # stop everything anyway, then report
                    problem = f"stopped, but the DynamoDB snapshot failed: {exc}"
            self._terminate(state, ["prometheus", "dynamodb", "redis"])
            self.config.state_file.unlink(missing_ok=True)
            (self.config.data_dir / DYNAMODB_RESTART_SNAPSHOT).unlink(missing_ok=True)
            if problem:
                raise RuntimeError_(problem)

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
                word = "stopped" if entry.get("stopped") or not entry else "exited"
                return ComponentStatus(name=name, state=word, pid=None, ready=False, url=url)
            if proc in ("T", "t"):
                return ComponentStatus(name, "paused", entry.get("pid"), False, url)
            with httpx.Client(timeout=1.0) as client:
                ready = self._probe(name, state, client)
            return ComponentStatus(name, "running", entry.get("pid"), ready, url)

        with ThreadPoolExecutor(max_workers=len(COMPONENTS)) as pool:
            return list(pool.map(one, COMPONENTS))

    def endpoints(self) -> Endpoints:
        state = self._load_state()
        if state is None:
            cfg = self.config
            state = {"host": cfg.host, "ports": cfg.ports()}
        return self._endpoints(state)

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
                state["components"][name] = self._spawn(name, state, secret)
                self._save_state(state)
        self._wait_ready([name], state, time.monotonic() + START_TIMEOUT_SECONDS)
        if name == "dynamodb":
            snapshot = self.config.data_dir / DYNAMODB_RESTART_SNAPSHOT
            if snapshot.exists():
                self._restore_dynamodb(state, snapshot)
                snapshot.unlink(missing_ok=True)

    def pause(self, name: str) -> None:
        self._send_running(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self._send_running(name, signal.SIGCONT)

    def reconfigure(self, name: str, env: Mapping[str, str] | None) -> None:
        if name not in SERVICES:
            raise RuntimeError_(f"only services can be reconfigured, not {name!r}")
        bad = [k for k in (env or {}) if not k.startswith("CNOP_")]
        if bad:
            raise RuntimeError_(f"settings must be CNOP_* variables, got {', '.join(bad)}")
        with self._locked():
            state = self._require_state()
            overrides = state.setdefault("overrides", {})
            if env is None and name not in overrides and self._pid_state(state, name) is not None:
                # Already on its defaults: no restart, so a blanket "reset" stays cheap.
                return
            if env is None:
                overrides.pop(name, None)
            else:
                overrides[name] = {k: str(v) for k, v in env.items()}
            self._save_state(state)
        self.stop(name)
        self.start(name)

    def set_flaws(self, flaws: FlawLayer) -> list[str]:
        wanted = normalise_flaws(flaws)
        with self._locked():
            state = self._require_state()
            before = flaw_env(state.get("flaws") or {})
            state["flaws"] = wanted
            after = flaw_env(wanted)
            changed = [s for s in SERVICES if before.get(s, {}) != after.get(s, {})]
            self._save_state(state)
        if not changed:
            return []
        for name in changed:
            self.stop(name)
        # Started together and waited for together: six services restart in the time of one.
        with self._locked():
            state = self._require_state()
            secret = self.config.jwt_secret()
            for name in changed:
                if self._pid_state(state, name) is None:
                    state["components"][name] = self._spawn(name, state, secret)
            self._save_state(state)
        self._wait_ready(changed, state, time.monotonic() + FLAW_RESTART_TIMEOUT_SECONDS)
        return changed

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
        for snap in (DYNAMODB_SNAPSHOT, DYNAMODB_RESTART_SNAPSHOT):
            (data / snap).unlink(missing_ok=True)

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
            return [sys.executable, "-m", "cnop.core.moto_server", "-H", host, "-p", port], env
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
        env.update(flaw_env(state.get("flaws") or {}).get(name, {}))
        env.update((state.get("overrides") or {}).get(name, {}))
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
        return {
            "pid": proc.pid,
            "start_ticks": _start_ticks(proc.pid),
            "started_at": _now_iso(),
            "stopped": False,
        }

    def _pid_state(self, state: dict[str, Any], name: str) -> str | None:
        """The process's /proc state letter (R, S, T...), or None when it is gone."""
        entry = (state.get("components") or {}).get(name)
        if not entry or not entry.get("pid"):
            return None
        return _proc_state(entry["pid"], entry.get("start_ticks"), self._children)

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
            if name == "dynamodb":
                self._resume_if_paused(state, name)
                with contextlib.suppress(Exception):  # an unresponsive moto loses its data
                    self._snapshot_dynamodb(state, self.config.data_dir / DYNAMODB_RESTART_SNAPSHOT)
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
                            state["components"][name] = self._spawn(name, state, secret)
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

    def _dynamodb_client(self, state: dict[str, Any]) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "dynamodb",
            endpoint_url=f"http://{state['host']}:{state['ports']['dynamodb']}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto accepts anything
            config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10),
        )

    def _snapshot_dynamodb(self, state: dict[str, Any], path: Path) -> int:
        """Write every table of this sandbox (key schema + items) to ``path``; returns items."""
        client = self._dynamodb_client(state)
        prefix = f"{state['table_prefix']}-"
        tables: list[dict[str, Any]] = []
        count = 0
        for page in client.get_paginator("list_tables").paginate():
            for table in page.get("TableNames", []):
                if not table.startswith(prefix):
                    continue
                desc = client.describe_table(TableName=table)["Table"]
                items: list[dict[str, Any]] = []
                for scan in client.get_paginator("scan").paginate(TableName=table):
                    items.extend(_encode_item(i) for i in scan.get("Items", []))
                count += len(items)
                entry: dict[str, Any] = {
                    "name": table,
                    "key_schema": desc["KeySchema"],
                    "attribute_definitions": desc["AttributeDefinitions"],
                    "items": items,
                }
                for key, out in (
                    ("GlobalSecondaryIndexes", "global_secondary_indexes"),
                    ("LocalSecondaryIndexes", "local_secondary_indexes"),
                ):
                    if desc.get(key):
                        entry[out] = [
                            {k: ix[k] for k in ("IndexName", "KeySchema", "Projection")}
                            for ix in desc[key]
                        ]
                tables.append(entry)
        doc = {
            "version": 1,
            "created_at": _now_iso(),
            "table_prefix": state["table_prefix"],
            "tables": tables,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)
        return count

    def _restore_dynamodb(self, state: dict[str, Any], path: Path) -> int:
        if not path.exists():
            return 0
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise RuntimeError_(f"{path} is not a DynamoDB snapshot ({exc})") from exc
        client = self._dynamodb_client(state)
        existing = set(client.list_tables().get("TableNames", []))
        count = 0
        for table in doc.get("tables", []):
            name = table["name"]
            if name not in existing:
                kwargs: dict[str, Any] = {
                    "TableName": name,
                    "KeySchema": table["key_schema"],
                    "AttributeDefinitions": table["attribute_definitions"],
                    "BillingMode": "PAY_PER_REQUEST",
                }
                if table.get("global_secondary_indexes"):
                    kwargs["GlobalSecondaryIndexes"] = table["global_secondary_indexes"]
                if table.get("local_secondary_indexes"):
                    kwargs["LocalSecondaryIndexes"] = table["local_secondary_indexes"]
                client.create_table(**kwargs)
            items = [_decode_item(i) for i in table.get("items", [])]
            for i in range(0, len(items), 25):
                request = {name: [{"PutRequest": {"Item": it}} for it in items[i : i + 25]]}
                for _ in range(10):
                    unprocessed = client.batch_write_item(RequestItems=request).get(
                        "UnprocessedItems"
                    )
                    if not unprocessed:
                        break
                    request = unprocessed
                    time.sleep(0.05)
            count += len(items)
        return count


# ==================================================================== helpers
def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _read_stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after "(comm)"; comm itself may contain spaces and parentheses.
    return stat[stat.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _read_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _proc_state(
    pid: int, start_ticks: int | None, children: Mapping[int, subprocess.Popen[bytes]]
) -> str | None:
    child = children.get(pid)
    if child is not None and child.poll() is not None:
        return None  # our own child, exited (and now reaped)
    if not Path("/proc").is_dir():  # no procfs (not Linux): best effort
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "S"
        return "S"
    fields = _read_stat(pid)
    if fields is None:
        return None
    if start_ticks is not None and len(fields) > 19 and int(fields[19]) != start_ticks:
        return None  # the pid was reused by an unrelated process
    if fields[0] in ("Z", "X", "x"):
        return None
    return fields[0]


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


def _encode_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB wire-format item as JSON: binary values become base64 (``B64``/``BS64``)."""
    return {name: _encode_av(av) for name, av in item.items()}


def _encode_av(av: Mapping[str, Any]) -> dict[str, Any]:
    ((tag, value),) = av.items()
    if tag == "B":
        return {"B64": base64.b64encode(value).decode()}
    if tag == "BS":
        return {"BS64": [base64.b64encode(b).decode() for b in value]}
    if tag == "M":
        return {"M": _encode_item(value)}
    if tag == "L":
        return {"L": [_encode_av(v) for v in value]}
    return {tag: value}


def _decode_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _decode_av(av) for name, av in item.items()}


def _decode_av(av: Mapping[str, Any]) -> dict[str, Any]:
    ((tag, value),) = av.items()
    if tag == "B64":
        return {"B": base64.b64decode(value)}
    if tag == "BS64":
        return {"BS": [base64.b64decode(b) for b in value]}
    if tag == "M":
        return {"M": _decode_item(value)}
    if tag == "L":
        return {"L": [_decode_av(v) for v in value]}
    return {tag: value}
