"""Reproducible installs: constraints.txt pins every package exactly, covers every dependency
pyproject.toml names, and is what this environment was installed from (bootstrap and CI use
it), so a class of students runs the versions the suite ran on."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"constraints.txt: not an exact pin: {line!r}"
        pins[_canonical(match[1])] = match[2]
    return pins


def test_every_dependency_of_pyproject_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = _pins()
    for requirement in wanted:
        name = _canonical(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} is not pinned in constraints.txt"


def test_this_environment_was_installed_from_the_pins() -> None:
    wrong = {}
    for name, version in _pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, None)
            continue
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"pinned vs installed (run scripts/bootstrap.sh): {wrong}"


def test_bootstrap_installs_with_the_constraints() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "-c constraints.txt" in bootstrap
    assert "constraints.txt" in bootstrap.split("want=", 1)[1].splitlines()[0]
