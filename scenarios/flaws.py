"""The flaw catalogue (``security/flaws.yaml``) and switching flaws on a running sandbox.

A flaw is a named set of ``CNOP_*`` settings, per service, that opens one real hole (OWASP API
Security Top 10, 2023). The platform is hardened by default; a flaw is a layer of settings the
runtime keeps in ``state.json`` beside ``CNOP_LAB_SERVICE_ENV`` and a drill's reconfigure():
every service starts with ``CNOP_LAB_SERVICE_ENV``, then the flaws' settings, then the drill's.
So a drill that reconfigures a service and restores its defaults leaves a flaw on, and
``lab reset`` (:func:`clear_flaws`) is what switches every flaw off.

Switching restarts only the services whose flaw settings change, all at once. A run made while
a flaw is on records it (``RunResult.flaws``, ``Provenance.flaws``) and is never "hardened".

This module knows nothing about any one flaw: what each opens, and how to see it (``probe``),
is data; :mod:`scenarios.flaw_probe` sends a probe.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scenarios.config import REPO_ROOT
from scenarios.runtime.base import SERVICES, Runtime, RuntimeError_

__all__ = [
    "FLAWS_FILE",
    "Flaw",
    "FlawError",
    "Probe",
    "ProbeExpectation",
    "apply_flaws",
    "clear_flaws",
    "flaw_layer",
    "flaws_on",
    "flaws_switched_on",
    "get_flaw",
    "load_flaws",
    "revoke_flaws",
    "set_flaws",
]

FLAWS_FILE = REPO_ROOT / "security" / "flaws.yaml"
_NAME = r"^[a-z][a-z0-9-]{1,40}$"


class FlawError(RuntimeError_):
    """An unknown flaw or an unreadable catalogue; one line for the CLI."""


class ProbeExpectation(BaseModel):
    """What the judged answer shows; every condition given must hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: int | None = None
    # name (any case) -> value; "{origin}" is the Origin header the probe sent
    headers: dict[str, str] = {}
    headers_absent: list[str] = []
    body_has: list[str] = []  # dotted JSON paths that must be present
    body_lacks: list[str] = []  # ... that must be absent
    cracked: bool | None = None  # as: cracked: whether a word of `crack` signed the token


class Probe(BaseModel):
    """How to see a flaw by hand: one request (maybe repeated) and what its answer shows."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    as_: Literal["none", "user", "unsigned", "cracked"] = Field(default="none", alias="as")
    needs: list[Literal["account", "other-order"]] = []
    crack: list[str] = []
    method: str = "GET"
    path: str
    headers: dict[str, str] = {}
    json_body: Any = Field(default=None, alias="json")
    times: int = Field(default=1, ge=1, le=50)
    vary_header: dict[str, str] = {}
    open: ProbeExpectation
    closed: ProbeExpectation
    shows: str = ""

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class Flaw(BaseModel):
    """One entry of the catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    title: str
    owasp: str = Field(pattern=r"^API([1-9]|10):2023 .+")
    cwe: int = Field(ge=1)
    description: str
    env: dict[str, dict[str, str]]
    probe: Probe

    @field_validator("env", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            s: {k: v if isinstance(v, str) else str(v) for k, v in (env or {}).items()}
            for s, env in value.items()
        }

    @field_validator("env")
    @classmethod
    def _known_services(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        if not value:
            raise ValueError("a flaw needs at least one setting")
        for service, env in value.items():
            if service not in SERVICES:
                raise ValueError(f"unknown service {service!r}; one of: {', '.join(SERVICES)}")
            bad = [k for k in env if not k.startswith("CNOP_")]
            if bad or not env:
                raise ValueError(f"{service}: settings must be CNOP_* variables, got {bad}")
        return value

    @property
    def services(self) -> tuple[str, ...]:
        """The services switching this flaw restarts, in the platform's order."""
        return tuple(s for s in SERVICES if s in self.env)

    @property
    def owasp_id(self) -> str:
        """``API1:2023`` of ``API1:2023 Broken Object Level Authorization``."""
        return self.owasp.split(" ", 1)[0]

    @property
    def settings_text(self) -> str:
        return "; ".join(
            f"{s}: {', '.join(f'{k}={v}' for k, v in self.env[s].items())}" for s in self.services
        )


class _Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flaws: list[Flaw]


def load_flaws(path: Path | None = None) -> dict[str, Flaw]:
    """Every flaw of the catalogue by name, in the file's order; FlawError when unreadable."""
    return dict(_load(path or FLAWS_FILE))


@cache
def _load(path: Path) -> tuple[tuple[str, Flaw], ...]:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise FlawError(f"cannot read the flaw catalogue {path}: {exc}") from exc
    try:
        catalogue = _Catalogue.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FlawError(f"{path}: {where}: {first['msg']}") from None
    names = [f.name for f in catalogue.flaws]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FlawError(f"{path}: flaw named twice: {', '.join(twice)}")
    return tuple((f.name, f) for f in catalogue.flaws)


def get_flaw(name: str, catalogue: dict[str, Flaw] | None = None) -> Flaw:
    """The flaw called ``name``; FlawError naming the closest one otherwise."""
    flaws = catalogue if catalogue is not None else load_flaws()
    if name in flaws:
        return flaws[name]
    close = difflib.get_close_matches(name, list(flaws), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}?" if close else f"one of: {', '.join(flaws)}"
    raise FlawError(f"unknown flaw {name!r}; {hint} (`lab flaws` lists them)")


def flaw_layer(
    names: Iterable[str], catalogue: dict[str, Flaw] | None = None
) -> dict[str, dict[str, dict[str, str]]]:
    """What the runtime keeps for these flaws: name -> service -> settings."""
    flaws = catalogue if catalogue is not None else load_flaws()
    return {n: {s: dict(e) for s, e in get_flaw(n, flaws).env.items()} for n in sorted(set(names))}


def flaws_on(runtime: Runtime) -> list[str]:
    """The names of the flaws switched on in the running sandbox, sorted."""
    return sorted(runtime.flaws_in_force())


def set_flaws(runtime: Runtime, names: Iterable[str]) -> list[str]:
    """Exactly ``names`` on, every other flaw off; returns the services restarted."""
    return runtime.set_flaws(flaw_layer(names))


def apply_flaws(runtime: Runtime, names: Iterable[str]) -> list[str]:
    """Switch ``names`` on (flaws already on stay on); returns the services restarted."""
    wanted = list(names)
    flaws = load_flaws()
    for name in wanted:
        get_flaw(name, flaws)
    current = runtime.flaws_in_force()
    layer = {**current, **flaw_layer(wanted, flaws)}
    return runtime.set_flaws(layer)


def revoke_flaws(runtime: Runtime, names: Iterable[str]) -> list[str]:
    """Switch ``names`` off (the others stay as they are); returns the services restarted."""
    gone = set(names)
    flaws = load_flaws()
    for name in gone:
        get_flaw(name, flaws)
    current = runtime.flaws_in_force()
    return runtime.set_flaws({n: env for n, env in current.items() if n not in gone})


def clear_flaws(runtime: Runtime) -> list[str]:
    """Every flaw off (what `lab reset` does); returns the services restarted."""
    if not runtime.flaws_in_force():
        return []
    return runtime.set_flaws({})


@contextmanager
def flaws_switched_on(runtime: Runtime, names: Iterable[str]) -> Iterator[list[str]]:
    """Exactly ``names`` on inside (e.g. for one scan), the flaws on before restored after.

    Yields the names switched on."""
    wanted = sorted(set(names))
    before = runtime.flaws_in_force()
    runtime.set_flaws(flaw_layer(wanted))
    try:
        yield wanted
    finally:
        runtime.set_flaws(before)
