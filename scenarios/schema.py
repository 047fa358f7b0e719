"""Scenarios as data: the YAML a drill is written in, validated before anything runs.

In the spirit of Chaos Toolkit experiments: a steady-state hypothesis that must hold before and
after, a method of timed steps (traffic and actions, concurrent where they overlap), rollbacks
that always run, and checks the grader evaluates. Parameters have defaults that ``--param k=v``
overrides; ``{name}`` in any string is replaced by the parameter's value (a string that is only
``{name}`` takes the parameter's type). ``{window}`` in a query is left for the grader.

A parameter is a plain default (``rate: 10``) or a mapping with bounds that every override is
checked against before anything runs (``rate: {default: 10, min: 1, max: 50, help: ...}``;
``choices: [...]`` for a fixed set). `lab scenarios NAME` shows them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grader.model import CheckSpec, Comparison, InvariantCheck, LogsCheck, PromQLCheck, TrafficCheck
from scenarios.cli_support import unknown_name
from scenarios.traffic import KIND_PARAMS, generator_names

SCENARIO_DIR = Path(__file__).resolve().parent
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{1,40}$"
ParamValue = bool | int | float | str
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
SERVICE_NAMES = ("gateway", "auth", "user", "order", "inventory", "insights")
COMPONENT_NAMES = (*SERVICE_NAMES, "redis", "dynamodb", "prometheus")


class ScenarioError(Exception):
    """A scenario file that cannot be used; the message is one line naming file and field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- parameters -----------------------------------------------------------------------------


class ParamSpec(_Model):
    """A parameter's default and what an override may be; bounds are inclusive."""

    default: ParamValue
    min: float | None = None
    max: float | None = None
    choices: list[ParamValue] | None = None
    help: str = ""

    @model_validator(mode="after")
    def _default_fits(self) -> ParamSpec:
        numeric = isinstance(self.default, int | float) and not isinstance(self.default, bool)
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError("min and max apply to numeric parameters only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        problem = self.problem(self.default)
        if problem:
            raise ValueError(f"the default {problem}")
        return self

    def problem(self, value: ParamValue) -> str | None:
        """Why ``value`` is out of bounds, or None when it fits."""
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {', '.join(map(str, self.choices))}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if self.min is not None and value < self.min:
            return f"{value:g} is below the minimum {self.min:g}"
        if self.max is not None and value > self.max:
            return f"{value:g} is above the maximum {self.max:g}"
        return None

    def bounds_text(self) -> str:
        """``1..50``, ``>= 0``, ``one of a, b`` or ``-`` for `lab scenarios NAME`."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.min is not None and self.max is not None:
            return f"{self.min:g}..{self.max:g}"
        if self.min is not None:
            return f">= {self.min:g}"
        if self.max is not None:
            return f"<= {self.max:g}"
        return "-"

    @property
    def type_name(self) -> str:
        return type(self.default).__name__


# --- setup ----------------------------------------------------------------------------------


class AccountSpec(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,11}$")  # the key checks and steps use
    deposit: float = Field(default=0, ge=0, le=10_000)  # the default daily deposit limit


# --- actions --------------------------------------------------------------------------------

ActionName = Literal[
    "kill",
    "stop",
    "start",
    "restart",
    "pause",
    "resume",
    "reconfigure",
    "set_fault",
    "clear_faults",
    "sleep",
    "wait_for",
]
FaultName = Literal["latency", "error_rate", "hang", "dependency_failure"]
_NEEDS_TARGET = {"kill", "stop", "start", "restart", "pause", "resume", "reconfigure", "set_fault"}


class ActionSpec(_Model):
    action: ActionName
    target: str | None = None  # a service or redis/dynamodb/prometheus
    env: dict[str, str] | None = None  # reconfigure; None restores the defaults
    fault: FaultName | None = None  # set_fault
    params: dict[str, Any] = {}  # set_fault: the flag's JSON value
    ttl_seconds: int = Field(default=120, ge=1, le=3600)  # set_fault: always a TTL
    seconds: float = Field(default=0, ge=0, le=600)  # sleep; wait_for: the longest wait
    # wait_for: poll this PromQL until every sample satisfies `op value` (or `seconds` pass;
    # not meeting it is recorded, not an error: a weakened platform may never get there).
    query: str | None = None
    op: Comparison = "=="
    value: float = 0

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                str(k): (str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ActionSpec:
        if self.action in _NEEDS_TARGET and not self.target:
            raise ValueError(f"action {self.action} needs a target")
        if self.target is not None:
            allowed = (
                SERVICE_NAMES if self.action in ("reconfigure", "set_fault") else COMPONENT_NAMES
            )
            if self.action == "clear_faults":
                allowed = SERVICE_NAMES
            if self.target not in allowed:
                raise ValueError(f"unknown target {self.target!r} for {self.action}")
        if self.action == "wait_for" and (not self.query or self.seconds <= 0):
            raise ValueError("wait_for needs a query and seconds (how long to wait at most)")
        if self.action == "set_fault" and self.fault is None:
            raise ValueError(
                "set_fault needs a fault (latency, error_rate, hang, dependency_failure)"
            )
        return self

    def describe(self) -> str:
        if self.action == "sleep":
            return f"sleep {self.seconds:g}s"
        if self.action == "wait_for":
            return f"wait_for {self.query} {self.op} {self.value:g} (<= {self.seconds:g}s)"
        if self.action == "set_fault":
            return f"set_fault {self.target} {self.fault} {self.params}"
        if self.action == "reconfigure":
            return f"reconfigure {self.target} {self.env or 'defaults'}"
        return f"{self.action} {self.target or 'all'}".strip()


# --- method ---------------------------------------------------------------------------------


class _Step(_Model):
    at: float = Field(default=0, ge=0, le=600)  # seconds after the method starts
    # Phases for the grader's windows: marked when this step *finishes* (a kill, a start that
    # waited for readiness, the end of a traffic run). Unended phases end with the method.
    begin: list[str] = []
    end: list[str] = []

    @field_validator("begin", "end", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class TrafficStep(_Step):
    type: Literal["traffic"] = "traffic"
    generator: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,40}$")
    kind: Literal[tuple(KIND_PARAMS)]  # type: ignore[valid-type]
    duration: float | None = Field(default=None, gt=0, le=600)
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _params_fit_kind(self) -> TrafficStep:
        try:
            params = KIND_PARAMS[self.kind].model_validate(self.params)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"params.{where}: {first['msg']}") from None
        # Generators are bounded: a paced one needs a duration unless it has a count.
        paced = self.kind in ("browse", "requests", "login_legit", "idempotent_orders")
        if paced and self.duration is None and getattr(params, "count", None) is None:
            raise ValueError(f"a {self.kind} generator needs a duration (or params.count)")
        return self

    def typed_params(self) -> BaseModel:
        return KIND_PARAMS[self.kind].model_validate(self.params)

    def describe(self) -> str:
        return f"traffic {self.generator} ({self.kind})"


class ActionStep(_Step, ActionSpec):
    type: Literal["action"] = "action"
    duration: float | None = None  # not used by actions; accepted for symmetry


Step = Annotated[TrafficStep | ActionStep, Field(discriminator="type")]


# --- steady state ---------------------------------------------------------------------------


class HttpProbe(_Model):
    type: Literal["http"] = "http"
    name: str
    method: Literal["GET", "POST"] = "GET"
    path: str = Field(pattern=r"^/")
    account: str | None = None  # send this account's bearer token
    json_body: dict[str, Any] | None = Field(default=None, alias="json")
    expect_status: list[int] = [200]
    # POST the account's username and password to `path` (a login probe) instead of a token.
    login: bool = False

    @model_validator(mode="after")
    def _login_needs_account(self) -> HttpProbe:
        if self.login and not self.account:
            raise ValueError(f"probe {self.name}: login needs an account")
        return self

    @field_validator("expect_status", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value


class PromQLProbe(_Model):
    type: Literal["promql"] = "promql"
    name: str
    query: str
    op: Comparison
    value: float
    absent_ok: bool = False  # no series at all counts as holding


Probe = Annotated[HttpProbe | PromQLProbe, Field(discriminator="type")]


class SteadyState(_Model):
    title: str = "the platform serves its users"
    probes: list[Probe] = Field(min_length=1)


class ChartSpec(_Model):
    title: str
    query: str  # PromQL; may use {window}
    unit: str = ""
    legend: str | None = None  # a label name for the series legend
    # Phases to shade; by default every phase of the drill (all but `drill` itself).
    shaded: list[str] | None = None
    # Names for the values on the y axis: a state gauge reads {0: closed, 1: open, 2: half-open}.
    value_names: dict[int, str] = {}


# --- the scenario ---------------------------------------------------------------------------


class Scenario(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    title: str
    description: str = Field(max_length=120)  # one line, for `lab scenarios`
    teaches: str = ""
    parameters: dict[str, ParamValue] = {}
    # Filled by load_scenario from `parameters:` (a file never writes it): defaults and bounds.
    parameter_specs: dict[str, ParamSpec] = Field(default={}, exclude=True)
    setup_accounts: list[AccountSpec] = Field(default=[], alias="accounts")
    setup_actions: list[ActionSpec] = []
    steady_state_hypothesis: SteadyState | None = None
    method: list[Step] = Field(min_length=1)
    rollbacks: list[ActionSpec] = []
    checks: list[CheckSpec] = Field(min_length=1)
    charts: list[ChartSpec] = []
    # What each phase measures, one line each: the report's Phases table shows it.
    phases: dict[str, str] = {}
    # Settings that switch the guarded protection off, per service (used by `lab selftest`).
    weaken: dict[str, dict[str, str]] = {}

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _flatten_setup(cls, data: Any) -> Any:
        if isinstance(data, dict) and "setup" in data:
            data = dict(data)
            setup = data.pop("setup") or {}
            if not isinstance(setup, dict):
                raise ValueError("setup must be a mapping with accounts and actions")
            unknown = set(setup) - {"accounts", "actions"}
            if unknown:
                raise ValueError(f"setup: unknown key(s) {', '.join(sorted(unknown))}")
            data["accounts"] = setup.get("accounts", [])
            data["setup_actions"] = setup.get("actions", [])
        return data

    @field_validator("description")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value.strip():
            raise ValueError("description must be one line (put the rest in `teaches`)")
        return value.strip()

    @field_validator("weaken", mode="before")
    @classmethod
    def _weaken_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for service, env in value.items():
                if service not in SERVICE_NAMES:
                    raise ValueError(f"weaken: unknown service {service!r}")
                out[service] = (
                    {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}
                    if isinstance(env, dict)
                    else env
                )
            return out
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> Scenario:
        accounts = {a.name for a in self.setup_accounts}
        if len(accounts) != len(self.setup_accounts):
            raise ValueError("setup.accounts: duplicate account name")
        generators: list[str] = []
        phases = {"drill"}
        for step in self.method:
            phases.update(step.begin)
            if isinstance(step, TrafficStep):
                params = step.typed_params()
                account = getattr(params, "account", None)
                if account is not None and account not in accounts:
                    raise ValueError(
                        f"method: generator {step.generator} uses unknown account {account!r}"
                    )
                generators.extend(generator_names(step.generator, step.kind, params))
        if len(set(generators)) != len(generators):
            raise ValueError("method: two traffic steps share a generator name")
        for step in self.method:
            for phase in step.end:
                if phase not in phases:
                    raise ValueError(f"method: phase {phase!r} ends but never begins")
        if self.steady_state_hypothesis:
            for probe in self.steady_state_hypothesis.probes:
                if isinstance(probe, HttpProbe) and probe.account and probe.account not in accounts:
                    raise ValueError(
                        f"steady_state_hypothesis: probe {probe.name} uses unknown account"
                    )
        for name in self.phases:
            if name not in phases:
                raise ValueError(f"phases: {name!r} is not a phase the method begins")
        for chart in self.charts:
            for name in chart.shaded or []:
                if name not in phases:
                    raise ValueError(f"charts: {chart.title!r} shades unknown phase {name!r}")
        ids = [c.id for c in self.checks]
        if len(set(ids)) != len(ids):
            raise ValueError("checks: duplicate check id")
        for check in self.checks:
            window = getattr(check, "window", "drill")
            if window not in phases:
                raise ValueError(f"checks: {check.id} uses unknown window {window!r}")
            if isinstance(check, TrafficCheck) and check.generator not in generators:
                raise ValueError(f"checks: {check.id} names unknown generator {check.generator!r}")
            if isinstance(check, InvariantCheck) and check.account not in accounts:
                raise ValueError(f"checks: {check.id} names unknown account {check.account!r}")
        return self

    # ----------------------------------------------------------------------------------

    @property
    def phase_names(self) -> list[str]:
        names = ["drill"]
        for step in self.method:
            names.extend(p for p in step.begin if p not in names)
        return names

    @property
    def guarded_checks(self) -> list[str]:
        return [c.id for c in self.checks if c.guards]

    @property
    def planned_seconds(self) -> float:
        """The method's planned length (actions may take longer: a start waits for readiness)."""
        ends = [
            step.at
            + (step.duration or 0)
            + (step.seconds if isinstance(step, ActionStep) else 0)  # sleep, wait_for
            for step in self.method
        ]
        return max(ends, default=0.0)


__all__ = [
    "AccountSpec",
    "ActionSpec",
    "ActionStep",
    "ChartSpec",
    "HttpProbe",
    "InvariantCheck",
    "LogsCheck",
    "ParamSpec",
    "PromQLCheck",
    "PromQLProbe",
    "Scenario",
    "ScenarioError",
    "TrafficCheck",
    "TrafficStep",
    "available",
    "load_scenario",
    "parse_overrides",
]


# --- loading --------------------------------------------------------------------------------


def _coerce(name: str, default: ParamValue, text: str) -> ParamValue:
    """``text`` as the default's type: ints stay ints (``2.5`` is not an int), bools accept
    true/false/yes/no/on/off/1/0."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ScenarioError(f"--param {name}: expected true or false, got {text!r}")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ScenarioError(f"--param {name}: expected {kind}, got {text!r}") from None
    return text


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """``["rate=10", "asset=ETH"]`` -> dict; a malformed pair is a :class:`ScenarioError`."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ScenarioError(f"--param {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _substitute(node: Any, values: dict[str, ParamValue]) -> Any:
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(
            lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), node
        )
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    return node


def _where(loc: tuple[Any, ...], raw: Any) -> str:
    """A readable field path, e.g. ``method[2 browse].params.rate`` (list items are named by
    their id, generator, name or action; pydantic's union tags are left out)."""
    parts: list[str] = []
    node = raw
    after_index = False
    for item in loc:
        if isinstance(item, int):
            entry = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
            label = ""
            if isinstance(entry, dict):
                for key in ("id", "generator", "name", "action"):
                    if isinstance(entry.get(key), str):
                        label = " " + entry[key]
                        break
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}{label}]"]
            node, after_index = entry, True
            continue
        if (
            after_index and isinstance(node, dict) and item in (node.get("type"), node.get("kind"))
        ) or str(item).startswith("function-"):
            after_index = False
            continue  # the discriminated union's tag, or a validator's name
        after_index = False
        parts.append(str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def load_scenario(path: Path | str, overrides: dict[str, str] | None = None) -> Scenario:
    """Load, substitute parameters, validate; any problem is one :class:`ScenarioError` line."""
    path = Path(path)
    label = path.name
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{label}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ScenarioError(f"{label}:{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{label}: a scenario is a YAML mapping")
    if "parameter_specs" in raw:
        raise ScenarioError(f"{label}: parameter_specs: not a field (bounds go in `parameters:`)")
    specs = _param_specs(label, raw.get("parameters") or {})
    values: dict[str, ParamValue] = {name: spec.default for name, spec in specs.items()}
    for key, text in (overrides or {}).items():
        if key not in specs:
            raise ScenarioError(f"{label}: {unknown_name('parameter', key, sorted(specs))}")
        value = _coerce(key, specs[key].default, text)
        problem = specs[key].problem(value)
        if problem:
            raise ScenarioError(f"--param {key}: {problem} (bounds: {specs[key].bounds_text()})")
        values[key] = value
    document = {
        key: (value if key == "parameters" else _substitute(value, values))
        for key, value in raw.items()
    }
    document["parameters"] = dict(values)
    document["parameter_specs"] = specs
    try:
        scenario = Scenario.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        where = _where(first["loc"], document)
        if message.startswith("params.") and ": " in message:  # a generator's own parameter
            inner, message = message.split(": ", 1)
            where = f"{where}.{inner}"
        raise ScenarioError(f"{label}: {where}: {message}{more}") from None
    if scenario.name != path.stem:
        raise ScenarioError(f"{label}: name {scenario.name!r} must match the file name")
    scenario.parameters = values
    return scenario


def _param_specs(label: str, raw: Any) -> dict[str, ParamSpec]:
    """``parameters:`` as specs: a scalar is a default without bounds."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"{label}: parameters: a mapping of names to defaults")
    specs: dict[str, ParamSpec] = {}
    for name, value in raw.items():
        if isinstance(value, bool | int | float | str):
            specs[name] = ParamSpec(default=value)
            continue
        if not isinstance(value, dict):
            raise ScenarioError(
                f"{label}: parameters.{name}: a scalar default or a mapping with `default`"
            )
        try:
            specs[name] = ParamSpec.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            where = f"parameters.{name}" + (f".{field}" if field else "")
            raise ScenarioError(
                f"{label}: {where}: {first['msg'].removeprefix('Value error, ')}"
            ) from None
    return specs


def available(directory: Path = SCENARIO_DIR) -> dict[str, Path]:
    """Scenario name -> file, for every ``*.yaml`` in the scenario directory."""
    return {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def find(name: str, directory: Path = SCENARIO_DIR) -> Path:
    files = available(directory)
    if name not in files:
        raise ScenarioError(unknown_name("scenario", name, list(files)))
    return files[name]
