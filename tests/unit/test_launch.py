"""``python -m cnop.launch``: services forked from one interpreter, each as if started alone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import free_port, wait_for_port

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the launcher forks (POSIX)")


def _launch(orders: list[dict[str, Any]]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "cnop.launch"],
        input=json.dumps(orders).encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )


def _order(service: str, tmp_path: Path, redis_url: str, **env: str) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CNOP_")}
    return {
        "service": service,
        "env": {**base, "CNOP_DEV_MODE": "true", "CNOP_REDIS_URL": redis_url, **env},
        "log": str(tmp_path / f"{service}.log"),
        "cwd": str(tmp_path),
    }


def test_each_child_runs_its_own_service_with_its_own_environment(
    tmp_path: Path, redis_url: str
) -> None:
    ports = {"auth": free_port(), "insights": free_port()}
    orders = [
        _order(name, tmp_path, redis_url, CNOP_PORT=str(port), CNOP_HOST="127.0.0.1")
        for name, port in ports.items()
    ]
    done = _launch(orders)
    assert done.returncode == 0, done.stderr.decode()
    pids = json.loads(done.stdout)
    try:
        assert set(pids) == set(ports) and len(set(pids.values())) == 2
        for name, port in ports.items():
            wait_for_port(port, timeout=30)
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
            # A session of its own, so the lab can signal its whole group.
            assert os.getsid(pids[name]) == pids[name]
            assert psutil.Process(pids[name]).cwd() == str(tmp_path)
            started = [
                json.loads(line)
                for line in (tmp_path / f"{name}.log").read_text().splitlines()
                if '"service_started"' in line
            ]
            assert [(e["service"], e["port"]) for e in started] == [(name, port)]
    finally:
        for pid in pids.values():
            os.killpg(pid, signal.SIGKILL)


def test_a_child_that_cannot_start_says_why_in_its_own_log(tmp_path: Path, redis_url: str) -> None:
    order = _order("auth", tmp_path, redis_url, CNOP_DEV_MODE="false", CNOP_PORT=str(free_port()))
    done = _launch([order])
    assert done.returncode == 0, done.stderr.decode()
    pid = json.loads(done.stdout)["auth"]
    with contextlib.suppress(psutil.NoSuchProcess):  # already gone (and reaped by init)
        psutil.Process(pid).wait(timeout=30)
    assert "invalid settings: CNOP_JWT_SECRET must be set" in (tmp_path / "auth.log").read_text()


def test_an_unknown_service_starts_nothing(tmp_path: Path, redis_url: str) -> None:
    done = _launch([_order("auth", tmp_path, redis_url), _order("nginx", tmp_path, redis_url)])
    assert done.returncode == 2
    assert b"unknown service 'nginx'" in done.stderr
    assert done.stdout == b"" and not (tmp_path / "auth.log").exists()
