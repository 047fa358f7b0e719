"""Runtimes: the one interface scenarios use to start, stop and hurt the platform."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from typing import TYPE_CHECKING

from scenarios.runtime.base import Runtime, RuntimeError_
from scenarios.runtime.sandbox import read_state

if TYPE_CHECKING:
    from scenarios.config import LabConfig

RUNTIMES = ("auto", "local", "docker")
DOCKER_INFO_TIMEOUT_SECONDS = 3.0


def get_runtime(name: str, config: LabConfig) -> Runtime:
    """The runtime called ``name`` (auto, local or docker) for the sandbox ``config`` describes."""
    if name == "auto":
        name = "docker" if _docker_usable(config) else "local"
    if name == "local":
        from scenarios.runtime.local import LocalRuntime

        return LocalRuntime(config)
    if name == "docker":
        try:
            module = importlib.import_module("scenarios.runtime.docker")
        except ImportError as exc:
            raise RuntimeError_(
                f"the docker runtime is not available ({exc}); use --runtime local"
            ) from exc
        return module.DockerRuntime(config)
    raise RuntimeError_(f"unknown runtime {name!r}; one of: {', '.join(RUNTIMES)}")


def current_runtime(config: LabConfig) -> Runtime | None:
    """The runtime of the sandbox recorded in ``state.json``, or None when nothing was started."""
    state = read_state(config.state_file)
    if state is None:
        return None
    name = state.get("runtime")
    if name not in ("local", "docker"):
        raise RuntimeError_(f"{config.state_file} names no known runtime; remove it")
    return get_runtime(name, config)


def _docker_usable(config: LabConfig) -> bool:
    """Docker only when its runtime is installed and an engine answers quickly.

    The Docker runtime may offer ``DockerRuntime.available(config) -> bool`` (e.g. "are the
    images built?"); when it does, auto also asks it.
    """
    if shutil.which("docker") is None:
        return False
    try:
        module = importlib.import_module("scenarios.runtime.docker")
    except ImportError:
        return False
    try:
        probe = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],  # noqa: S607
            capture_output=True,
            timeout=DOCKER_INFO_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if probe.returncode != 0:
        return False
    available = getattr(getattr(module, "DockerRuntime", None), "available", None)
    if callable(available):
        try:
            return bool(available(config))
        except Exception:  # a broken probe means "not usable", never a crash of `lab up`
            return False
    return hasattr(module, "DockerRuntime")


__all__ = ["RUNTIMES", "Runtime", "RuntimeError_", "current_runtime", "get_runtime"]
