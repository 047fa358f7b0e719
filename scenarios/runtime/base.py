"""The runtime interface: everything a scenario may do to the platform's processes or containers.

Scenarios and the grader talk only to this interface, so the same drill runs on local processes
(:mod:`scenarios.runtime.local`) and on Docker (:mod:`scenarios.runtime.docker`).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scenarios.config import LabConfig

SERVICES = ("gateway", "auth", "user", "order", "inventory", "insights")
# The header a backend requires of every call but its health probes (the platform's internal
# credential); the harness sends it where it reaches a backend directly, as the operator.
INTERNAL_TOKEN_HEADER = "X-CNOP-Internal-Token"  # noqa: S105 - a header name
INFRA = ("redis", "dynamodb", "prometheus")
FAULT_KINDS = ("latency", "error_rate", "hang", "dependency_failure")


class RuntimeError_(Exception):
    """A runtime operation failed in a way the CLI reports as one line."""


@dataclass(frozen=True)
class Endpoints:
    gateway: str  # e.g. http://127.0.0.1:8080
    prometheus: str  # e.g. http://127.0.0.1:9090
    redis: str  # e.g. redis://127.0.0.1:6390/0
    services: dict[str, str] = field(default_factory=dict)  # internal base URLs, where reachable


@dataclass(frozen=True)
class ClientAddresses:
    """Where drill clients send from, and to which gateway URL.

    Drills name their client addresses as loopback addresses (``127.0.0.21``). The gateway keys
    its limits and blocks on the socket peer and believes no ``X-Forwarded-For`` from a peer
    that does not write it itself, so each drill address must be a real source address the
    gateway sees: the local runtime binds the loopback addresses as they are; a runtime whose
    gateway cannot see them maps each to an address of its own (``sources``), and ``None``
    means the engine could not give that client an address of its own (``note`` says why).
    """

    gateway: str
    sources: Mapping[str, str | None] = field(default_factory=dict)
    note: str = ""

    def source(self, drill_address: str | None) -> str | None:
        """The address a client playing ``drill_address`` binds (None: the system's choice)."""
        if drill_address is None:
            return None
        return self.sources.get(drill_address, drill_address)


@dataclass(frozen=True)
class ComponentStatus:
    """``exited`` means it ended without the lab stopping it (a crash, or a kill from outside);
    then ``last_lines`` holds the end of its log and ``exit_code`` the code where known (the
    local runtime knows it only for processes of the current ``lab`` command)."""

    name: str
    state: str  # running, paused, stopped, exited
    pid: int | None = None
    ready: bool | None = None
    url: str | None = None
    exit_code: int | None = None
    last_lines: tuple[str, ...] = ()
    oom_killed: bool = False  # the kernel killed it at its memory limit (Docker knows)


class Runtime(abc.ABC):
    """What the harness may do to a running platform; every method raises RuntimeError_."""

    name: str
    config: LabConfig

    def signing_secret(self) -> str:
        """The sandbox's JWT secret. The lab operates the platform (it generated the secret), so
        a drill can mint what an attacker could only replay: a correctly signed, expired token.
        A flaw that replaces the secret (weak-jwt-secret) replaces it here too."""
        weak = flaw_env(self.flaws_in_force()).get("user", {}).get("CNOP_JWT_SECRET")
        return weak or self.config.jwt_secret()

    def internal_headers(self) -> dict[str, str]:
        """Headers that let the lab call a backend straight (bench, diagnostics), as the
        operator who generated the sandbox's internal credential; clients never get it."""
        return {INTERNAL_TOKEN_HEADER: self.config.internal_secret()}

    # --- lifecycle -----------------------------------------------------------------------
    @abc.abstractmethod
    def up(
        self, *, persist: bool = False, timeout: float = 60.0, flaws: FlawLayer | None = None
    ) -> Endpoints:
        """Start the sandbox; ``flaws`` (see set_flaws()) are on from the first start."""

    @abc.abstractmethod
    def down(self) -> None: ...

    @abc.abstractmethod
    def is_up(self) -> bool: ...

    @abc.abstractmethod
    def status(self) -> list[ComponentStatus]: ...

    @abc.abstractmethod
    def memory(self) -> dict[str, int]:
        """Bytes of memory each running component holds (on the local runtime its proportional
        set size where the system has one, pages shared between processes counted once, else
        its resident set; the container's usage on Docker): what a server must hold per
        sandbox, the figure a workshop of 30 sandboxes is sized by. Components that are not
        running are absent."""

    @abc.abstractmethod
    def endpoints(self) -> Endpoints: ...

    def client_addresses(self, drill_addresses: Collection[str]) -> ClientAddresses:
        """Source addresses for the drill's client addresses (``127.x.y.z``); may add them to
        the machine for the sandbox's lifetime. Locally every loopback address reaches the
        gateway's socket as it is, so nothing is mapped."""
        return ClientAddresses(gateway=self.endpoints().gateway)

    # --- process / container faults (name: a service or an INFRA component) ---------------
    @abc.abstractmethod
    def kill(self, name: str) -> None:
        """SIGKILL; the component stays down until start()."""

    @abc.abstractmethod
    def stop(self, name: str) -> None: ...

    @abc.abstractmethod
    def start(self, name: str) -> None:
        """Start a stopped or killed component again and wait until it is ready."""

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    @abc.abstractmethod
    def pause(self, name: str) -> None: ...

    @abc.abstractmethod
    def resume(self, name: str) -> None: ...

    def partition(self, name: str) -> None:
        """Cut a component off the network (Docker only)."""
        raise RuntimeError_(f"network partitions are not supported by the {self.name} runtime")

    def heal(self, name: str) -> None:
        raise RuntimeError_(f"network partitions are not supported by the {self.name} runtime")

    @abc.abstractmethod
    def reconfigure(self, name: str, env: Mapping[str, str] | None) -> None:
        """Restart a service with extra settings (``{"CNOP_BREAKER_ENABLED": "false"}``),
        or with its defaults again when ``env`` is None; waits until it is ready."""

    @staticmethod
    def _set_layer(
        settings: dict[str, Any],
        changes: Mapping[str, Mapping[str, str] | None],
        running: Collection[str],
    ) -> list[str]:
        """Write ``changes`` into one settings layer (name -> env; None drops the service's
        entry); returns the services to restart. One already on its defaults (no entry) and
        running is left alone, so a blanket "reset" stays cheap."""
        restart = []
        for name, env in changes.items():
            if env is None and name not in settings and name in running:
                continue
            if env is None:
                settings.pop(name, None)
            else:
                settings[name] = {k: str(v) for k, v in env.items()}
            restart.append(name)
        return restart

    def reconfigure_many(self, changes: Mapping[str, Mapping[str, str] | None]) -> None:
        """reconfigure() several services; the runtimes that can restart them together, so a
        drill that reconfigures two services (or a selftest that weakens three) waits for one
        restart instead of one after another."""
        for name, env in changes.items():
            self.reconfigure(name, env)

    def configure(self, name: str, env: Mapping[str, str] | None) -> None:
        """Restart a service with the student's own settings (``lab config set``), kept apart
        from a drill's: ``reconfigure(name, None)`` and ``lab reset`` leave them in place."""
        raise RuntimeError_(f"`lab config` is not supported by the {self.name} runtime")

    # --- flaws (security/flaws.yaml; scenarios.flaws is the face of this) ------------------
    def flaws_in_force(self) -> FlawLayer:
        """The flaws switched on in this sandbox: name -> service -> ``CNOP_*`` settings."""
        from scenarios.runtime.sandbox import read_state  # sandbox imports this module

        state = read_state(self.config.state_file) or {}
        return normalise_flaws(state.get("flaws") or {})

    def set_flaws(self, flaws: FlawLayer) -> list[str]:
        """Switch exactly ``flaws`` on (name -> service -> settings), every other flaw off, and
        restart only the services whose flaw settings change; returns those services.

        Flaw settings sit between ``CNOP_LAB_SERVICE_ENV`` and a reconfigure()'s, so a drill
        that reconfigures a service and restores its defaults leaves the flaw on."""
        raise RuntimeError_(f"flaws are not supported by the {self.name} runtime")

    # --- fault flags and Redis state (the platform reads these keys; see docs/faults.md) ---
    @abc.abstractmethod
    def set_fault(
        self, service: str, fault: str, params: Mapping[str, Any], ttl_seconds: int
    ) -> None:
        """Write ``cnop:fault:{service}:{fault}`` = JSON(params) with a TTL (always)."""

    @abc.abstractmethod
    def clear_faults(self, service: str | None = None) -> int:
        """Delete the fault flags of one service (or all); returns how many were set."""

    @abc.abstractmethod
    def clear_state_keys(self) -> int:
        """Delete the platform's transient Redis state (limiter counters, login failures,
        IP blocks, locks, fault flags: every ``cnop:*`` key but revoked tokens)."""

    # --- what the sandbox runs with ---------------------------------------------------------
    def sandbox_started_at(self) -> datetime | None:
        """When this sandbox's `lab up` ran (``state.json``); None when nothing was started."""
        from scenarios.runtime.sandbox import read_state  # sandbox imports this module

        state = read_state(self.config.state_file)
        stamp = state.get("started_at") if state else None
        if not isinstance(stamp, str):
            return None
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def settings_in_force(self) -> dict[str, dict[str, str]]:
        """The ``CNOP_*`` settings each service runs with beyond its defaults: the sandbox's
        ``CNOP_LAB_SERVICE_ENV`` (every service) plus the student's ``lab config`` and what
        reconfigure() gave it. Services on their defaults are left out, so ``{}`` means the
        platform as shipped (hardened). A challenge's hidden settings are only named here
        (``challenge``); a run records them sealed (:mod:`scenarios.runtime.hidden`)."""
        from scenarios.runtime.sandbox import read_state  # sandbox imports this module

        state = read_state(self.config.state_file) or {}
        common = state.get("service_env")
        if not isinstance(common, dict):  # a runtime that does not record it reads the config
            common = dict(self.config.service_env)
        overrides = state.get("overrides") or {}
        config = state.get("config") or {}
        flawed = flaw_env(state.get("flaws") or {})
        in_force: dict[str, dict[str, str]] = {}
        for name in SERVICES:
            env = {
                **common,
                **flawed.get(name, {}),
                **(config.get(name) or {}),
                **(overrides.get(name) or {}),
            }
            if env:
                in_force[name] = {k: str(v) for k, v in sorted(env.items())}
        from scenarios.runtime.hidden import active_challenge  # hidden imports this module

        challenge = active_challenge(self.config.home)
        if challenge is not None:
            # Named, not shown: the run is not on the shipped settings, and says so.
            name = str((challenge.get("assignment") or {}).get("name", "?"))
            in_force["challenge"] = {"hidden settings of": name}
        return in_force

    # --- logs ----------------------------------------------------------------------------
    @abc.abstractmethod
    def log_lines(self, name: str, since: datetime | None = None) -> Iterator[str]:
        """Raw stdout lines of a component, oldest first (JSON for the six services)."""

    def log_events(self, name: str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
        """The component's JSON log events since ``since`` (non-JSON lines are skipped)."""
        for line in self.log_lines(name, since):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if since is not None and not _at_or_after(event.get("timestamp"), since):
                continue
            yield event


FlawLayer = Mapping[str, Mapping[str, Mapping[str, str]]]


def normalise_flaws(flaws: FlawLayer) -> dict[str, dict[str, dict[str, str]]]:
    """``flaws`` checked (known services, ``CNOP_*`` names) and with every value a string."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for flaw, services in sorted(flaws.items()):
        out[flaw] = {}
        for service, env in sorted(services.items()):
            if service not in SERVICES:
                raise RuntimeError_(
                    f"flaw {flaw}: unknown service {service!r}; one of: {', '.join(SERVICES)}"
                )
            bad = [k for k in env if not k.startswith("CNOP_")]
            if bad:
                raise RuntimeError_(
                    f"flaw {flaw}: settings must be CNOP_* variables, got {', '.join(bad)}"
                )
            out[flaw][service] = {k: str(v) for k, v in sorted(env.items())}
    return out


def flaw_env(flaws: FlawLayer) -> dict[str, dict[str, str]]:
    """Per service, the settings of every flaw in ``flaws`` together (in name order)."""
    merged: dict[str, dict[str, str]] = {}
    for _name, services in sorted(flaws.items()):
        for service, env in services.items():
            merged.setdefault(service, {}).update({k: str(v) for k, v in env.items()})
    return merged


def switch_flaws_in(state: dict[str, Any], wanted: FlawLayer) -> list[str]:
    """Records ``wanted`` (checked by :func:`normalise_flaws`) as the sandbox's flaws in
    ``state``; returns the services whose settings that changes (they must restart), in the
    order of :data:`SERVICES`."""
    before = flaw_env(state.get("flaws") or {})
    state["flaws"] = wanted
    after = flaw_env(wanted)
    return [s for s in SERVICES if before.get(s, {}) != after.get(s, {})]


def check_settings(name: str, env: Mapping[str, str] | None) -> None:
    """What every runtime checks before it restarts a service with other settings."""
    if name not in SERVICES:
        raise RuntimeError_(f"only services can be reconfigured, not {name!r}")
    bad = [k for k in (env or {}) if not k.startswith("CNOP_")]
    if bad:
        raise RuntimeError_(f"settings must be CNOP_* variables, got {', '.join(bad)}")


def service_layers(home: Path, state: Mapping[str, Any], name: str) -> dict[str, str]:
    """A service's settings beyond the sandbox's common ones, lowest first: a challenge's
    hidden settings, the flaws switched on, the student's ``lab config``, a drill's
    reconfiguration."""
    from scenarios.runtime.hidden import hidden_env  # hidden imports this module

    env = hidden_env(home, name)
    env.update(flaw_env(state.get("flaws") or {}).get(name, {}))
    env.update((state.get("config") or {}).get(name) or {})
    env.update((state.get("overrides") or {}).get(name) or {})
    return env


def fault_flag_key(service: str, fault: str, ttl_seconds: int) -> str:
    """The Redis key of a fault flag (docs/faults.md), after checking what a runtime is asked."""
    if service not in SERVICES:
        raise RuntimeError_(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")
    if fault not in FAULT_KINDS:
        raise RuntimeError_(f"unknown fault {fault!r}; one of: {', '.join(FAULT_KINDS)}")
    if int(ttl_seconds) < 1:
        raise RuntimeError_("a fault flag needs a TTL of at least 1 second")
    return f"cnop:fault:{service}:{fault}"


def fault_flag_pattern(service: str | None) -> str:
    """The key pattern of one service's fault flags, or of all of them."""
    if service is None:
        return "cnop:fault:*"
    if service not in SERVICES:
        raise RuntimeError_(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")
    return f"cnop:fault:{service}:*"


def _at_or_after(timestamp: object, since: datetime) -> bool:
    if not isinstance(timestamp, str):
        return False
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")) >= since
    except ValueError:
        return False
