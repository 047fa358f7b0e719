"""Provenance of a run: who ran which scenario file, where, with which lab and which settings.

Recorded in every result.json (``RunResult.provenance``) so a run can be graded later, away from
the machine it ran on. :class:`RunTags` is what the command line knows about the person and the
assignment; :func:`collect` adds what the machine and the sandbox know. Secrets among the
settings (any name with KEY, SECRET, TOKEN or PASSWORD) are recorded as ``<redacted>``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from grader.assignments import Assignment, AssignmentError, check_student, load_assignment
from grader.model import Provenance
from scenarios.config import REPO_ROOT, LabConfig
from scenarios.hints import HintError, revealed
from scenarios.runtime.base import Runtime, RuntimeError_, flaw_env
from scenarios.runtime.hidden import active_challenge
from scenarios.runtime.sandbox import read_state
from scenarios.schema import SCENARIO_DIR, Scenario

__all__ = [
    "REDACTED",
    "RunTags",
    "TagError",
    "assigned_settings",
    "collect",
    "collect_for",
    "file_sha256",
    "flaws_in_force",
    "run_tags",
    "settings_in_force",
]

REDACTED = "<redacted>"
_SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD")


@dataclass(frozen=True)
class RunTags:
    """What the command line says about a run: the student and the assignment it is for."""

    student: str | None = None
    assignment: Assignment | None = None

    @property
    def seal_key(self) -> bytes | None:
        if self.assignment is None or not self.assignment.signing_key:
            return None
        return bytes.fromhex(self.assignment.signing_key)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _lab_version() -> str:
    try:
        return metadata.version("cnop-lab")
    except metadata.PackageNotFoundError:
        return "unknown"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["git", "-C", str(REPO_ROOT), *args],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _redact(settings: dict[str, Any]) -> dict[str, str]:
    return {
        str(k): (REDACTED if any(w in str(k).upper() for w in _SECRET_WORDS) else str(v))
        for k, v in sorted(settings.items())
    }


def settings_in_force(runtime: Runtime) -> dict[str, dict[str, str]]:
    """Service settings beyond the defaults: ``all`` (given to every service by ``lab up``)
    and per service (the flaws switched on, then a drill's or selftest's reconfiguration)."""
    try:
        state = read_state(runtime.config.state_file) or {}
    except RuntimeError_:
        state = {}
    common = state.get("service_env", runtime.config.service_env) or {}
    out: dict[str, dict[str, str]] = {}
    if common:
        out["all"] = _redact(dict(common))
    flawed = flaw_env(state.get("flaws") or {})
    config = state.get("config") or {}
    overrides = state.get("overrides") or {}
    for service in sorted({*flawed, *config, *overrides}):
        env = {
            **flawed.get(service, {}),
            **(config.get(service) or {}),
            **(overrides.get(service) or {}),
        }
        if env:
            out[service] = _redact(env)
    return out


def flaws_in_force(runtime: Runtime) -> list[str]:
    """The names of the flaws on in the sandbox (none when it cannot tell)."""
    try:
        state = read_state(runtime.config.state_file) or {}
    except RuntimeError_:
        return []
    return sorted(state.get("flaws") or {})


def _lab_settings(config: LabConfig) -> dict[str, Any]:
    chosen = {}
    for name in sorted(config.model_fields_set):
        if any(w in name.upper() for w in _SECRET_WORDS) or name == "service_env":
            continue
        value = getattr(config, name)
        chosen[name] = value if isinstance(value, int | float | bool | str) else str(value)
    return chosen


def collect(scenario: Scenario, runtime: Runtime, tags: RunTags | None = None) -> Provenance:
    return collect_for(
        SCENARIO_DIR / f"{scenario.name}.yaml", runtime, tags, hints_of=scenario.name
    )


def collect_for(
    source: Path, runtime: Runtime, tags: RunTags | None = None, *, hints_of: str | None = None
) -> Provenance:
    """The provenance of a run defined by the file ``source`` (a scenario, a scan's rules);
    ``hints_of``: the drill whose revealed hints the run records."""
    tags = tags or RunTags()
    commit = _git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no"))
    return Provenance(
        student=tags.student,
        host=socket.gethostname(),
        os=f"{platform.system()} {platform.release()} ({platform.machine()})",
        python=platform.python_version(),
        lab_version=_lab_version(),
        git_commit=commit,
        git_dirty=dirty,
        scenario_file=os.path.relpath(source, REPO_ROOT) if source.exists() else "",
        scenario_sha256=file_sha256(source) if source.exists() else None,
        settings=settings_in_force(runtime),
        flaws=flaws_in_force(runtime),
        lab_settings=_lab_settings(runtime.config),
        assignment=tags.assignment.ref if tags.assignment else None,
        hints=_hints(runtime.config.home, hints_of) if hints_of else [],
        challenge=active_challenge(runtime.config.home),
    )


def _hints(home: Path, scenario: str) -> list[dict[str, Any]]:
    try:
        return revealed(home, scenario)
    except HintError as exc:
        raise RuntimeError_(str(exc)) from None


class TagError(Exception):
    """The student id or assignment given to a run is not usable; one line for the CLI."""


def run_tags(student: str | None, assignment_file: Path | None, scenarios: list[str]) -> RunTags:
    """The tags of a run from ``--student``/``CNOP_STUDENT`` and ``--assignment``: with an
    assignment a student id is required and every scenario must be one it assigns."""
    student = student or os.environ.get("CNOP_STUDENT") or None
    assignment = None
    if assignment_file is not None:
        try:
            assignment = load_assignment(assignment_file)
        except AssignmentError as exc:
            raise TagError(str(exc)) from None
        student = student or assignment.student
        if not student:
            raise TagError("--assignment needs a student id: --student ID or CNOP_STUDENT=ID")
        foreign = [name for name in scenarios if assignment.scenario(name) is None]
        if foreign:
            assigned = ", ".join(s.name for s in assignment.scenarios)
            raise TagError(
                f"assignment {assignment.name} does not ask for {', '.join(foreign)} "
                f"(it asks for: {assigned})"
            )
    if student:
        try:
            check_student(student)
        except AssignmentError as exc:
            raise TagError(str(exc)) from None
    return RunTags(student=student, assignment=assignment)


@contextmanager
def assigned_settings(
    runtime: Runtime, tags: RunTags, say: Callable[[str], None]
) -> Iterator[None]:
    """The assignment's service settings in force for the runs inside, defaults again after.
    A challenge assignment's runs need the platform started with it (``lab up --assignment``):
    its hidden settings are what the student must find and fix."""
    settings = tags.assignment.settings if tags.assignment else {}
    if tags.assignment is not None and tags.assignment.challenge:
        running = (active_challenge(runtime.config.home) or {}).get("assignment") or {}
        if running.get("key_id") != tags.assignment.key_id:
            raise RuntimeError_(
                f"assignment {tags.assignment.name} is a challenge: start the platform with "
                "`lab down; lab up --assignment FILE`, then find and fix what is wrong"
            )
    try:
        for service, env in settings.items():
            say(f"assignment settings for {service}: {env}")
        runtime.reconfigure_many(settings)
        yield
    finally:
        if settings:
            say(f"restore {', '.join(settings)} defaults")
            runtime.reconfigure_many(dict.fromkeys(settings))
