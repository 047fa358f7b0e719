"""The `lab` command as a learner uses it: up, status, logs, Prometheus, down, persistence.

Runs the installed console script in a temporary sandbox (CNOP_LAB_HOME) on shifted ports, so a
sandbox already running on this machine (or the e2e session sandbox) is never touched.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from scenarios.config import LabConfig
from scenarios.runtime.base import INFRA, SERVICES, ComponentStatus
from scenarios.runtime.local import LocalRuntime
from tests.conftest import sandbox_port_offset
from tests.sandbox import login_status, register_account

pytestmark = pytest.mark.e2e

LAB = str(Path(sys.executable).parent / "lab")
READY_BUDGET_SECONDS = 15.0
COMPONENTS = (*INFRA, *SERVICES)


@dataclass
class Box:
    home: Path
    env: dict[str, str]
    offset: int
    startup: float = 0.0

    def lab(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LAB, *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{8080 + self.offset}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{9090 + self.offset}"

    def state(self) -> dict[str, Any]:
        return json.loads((self.home / "state.json").read_text())


def make_box(tmp_path_factory: pytest.TempPathFactory, name: str, start: int) -> Box:
    home = tmp_path_factory.mktemp(name)
    offset = sandbox_port_offset(start)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNOP_")}
    env.update({"CNOP_LAB_HOME": str(home), "CNOP_LAB_PORT_OFFSET": str(offset)})
    return Box(home=home, env=env, offset=offset)


def up(box: Box, *extra: str) -> float:
    started = time.perf_counter()
    done = box.lab("up", "--runtime", "local", *extra)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, f"lab up failed:\n{done.stdout}\n{done.stderr}"
    return elapsed


def process_gone(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")  # a zombie waiting for init is no longer running


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    sandbox = make_box(tmp_path_factory, "lifecycle", 12000)
    sandbox.startup = up(sandbox)
    try:
        yield sandbox
    finally:
        sandbox.lab("down")


def test_up_is_ready_within_budget(box: Box) -> None:
    elapsed = box.startup
    phases = box.state().get("startup_seconds")
    print(f"\nlab up: ready in {elapsed:.2f} s (runtime phases: {phases})")
    assert elapsed < READY_BUDGET_SECONDS
    health = httpx.get(f"{box.gateway}/health", timeout=5)
    assert health.status_code == 200


def test_status_shows_everything_running(box: Box) -> None:
    done = box.lab("status", env={**box.env, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[1]: line for line in done.stdout.splitlines() if line.count("│") > 2}
    for name in COMPONENTS:
        assert "running" in rows[name], done.stdout
        assert "yes" in rows[name], done.stdout


def test_second_up_is_refused_in_one_line(box: Box) -> None:
    done = box.lab("up", "--runtime", "local")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "already running" in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_logs_are_json_lines(box: Box) -> None:
    done = box.lab("logs", "gateway", "--lines", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert 1 <= len(lines) <= 5
    for line in lines:
        event = json.loads(line)
        assert event["service"] == "gateway"
        assert {"timestamp", "level", "event"} <= set(event)
    unknown = box.lab("logs", "nope")
    assert unknown.returncode != 0 and len(unknown.stderr.strip().splitlines()) == 1


def test_prometheus_scrapes_every_job(box: Box) -> None:
    wanted = {*SERVICES, "prometheus"}
    deadline = time.monotonic() + 20
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        answer = httpx.get(f"{box.prometheus}/api/v1/query", params={"query": "up"}, timeout=5)
        assert answer.status_code == 200
        seen = {r["metric"]["job"]: r["value"][1] for r in answer.json()["data"]["result"]}
        if set(seen) >= wanted and all(seen[j] == "1" for j in wanted):
            return
        time.sleep(0.5)
    pytest.fail(f"not every job is up: {seen}")


def test_runtime_operations(box: Box) -> None:
    """What drills do through the runtime: kill/start, pause/resume, flags, reconfigure."""
    runtime = LocalRuntime(LabConfig(home=box.home, port_offset=box.offset))

    def states() -> dict[str, ComponentStatus]:
        return {c.name: c for c in runtime.status()}

    old_pid = states()["order"].pid
    runtime.kill("order")
    assert states()["order"].state == "stopped"
    assert process_gone(old_pid)
    runtime.start("order")
    order = states()["order"]
    assert order.state == "running" and order.ready and order.pid != old_pid

    runtime.pause("inventory")
    # SIGSTOP takes effect when the process next runs, which a loaded machine may not let it
    # do before its state is read: poll for it.
    deadline = time.monotonic() + 10
    while states()["inventory"].state != "paused" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert states()["inventory"].state == "paused"
    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{runtime.endpoints().services['inventory']}/health", timeout=0.5)
    runtime.resume("inventory")
    assert httpx.get(f"{runtime.endpoints().services['inventory']}/health").status_code == 200

    runtime.set_fault("inventory", "latency", {"ms": 50}, ttl_seconds=30)
    redis = Redis.from_url(runtime.endpoints().redis, decode_responses=True)
    try:
        assert json.loads(redis.get("cnop:fault:inventory:latency")) == {"ms": 50}
        assert 0 < redis.ttl("cnop:fault:inventory:latency") <= 30
        assert runtime.clear_faults("order") == 0
        assert runtime.clear_faults() == 1
        redis.set("cnop:revoked:some-jti", "1", ex=60)
        redis.set("cnop:test:counter", "1", ex=60)
        assert runtime.clear_state_keys() >= 1
        assert redis.get("cnop:test:counter") is None
        assert redis.get("cnop:revoked:some-jti") == "1"
    finally:
        redis.close()

    runtime.reconfigure("auth", {"CNOP_INTERNAL_TIMEOUT_SECONDS": "0.9"})
    assert states()["auth"].ready
    # What the service runs with, as it reports it (a forked service's /proc/PID/environ is
    # its launcher's: the settings are given to the fork, not to an exec).
    metrics = httpx.get(f"http://127.0.0.1:{box.state()['metrics_ports']['auth']}/metrics")
    assert 'cnop_setting{name="internal_timeout_seconds",service="auth"} 0.9' in metrics.text
    assert box.state()["overrides"] == {"auth": {"CNOP_INTERNAL_TIMEOUT_SECONDS": "0.9"}}
    runtime.reconfigure("auth", None)
    assert box.state()["overrides"] == {}
    assert states()["auth"].ready

    # Several at once (a drill's setup, a selftest's weakening): restarted together, each with
    # its own settings; one already on its defaults is left running.
    pids = {name: box.state()["components"][name]["pid"] for name in ("auth", "user", "order")}
    timeout = {"CNOP_INTERNAL_TIMEOUT_SECONDS": "0.8"}
    runtime.reconfigure_many({"auth": timeout, "user": timeout})
    after = box.state()
    assert after["overrides"] == {"auth": timeout, "user": timeout}
    for name in ("auth", "user"):
        assert after["components"][name]["pid"] != pids[name] and states()[name].ready
        port = after["metrics_ports"][name]
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert f'cnop_setting{{name="internal_timeout_seconds",service="{name}"}} 0.8' in metrics
    runtime.reconfigure_many({"auth": None, "user": None, "order": None})
    after = box.state()
    assert after["overrides"] == {}
    assert after["components"]["order"]["pid"] == pids["order"]  # was on its defaults
    assert states()["auth"].ready and states()["user"].ready

    # DynamoDB keeps its data through an outage, as the real one does.
    username, password = register_account(box.gateway, "persist")
    runtime.kill("dynamodb")
    runtime.start("dynamodb")
    assert login_status(box.gateway, username, password) == 200

    since = datetime.now(UTC) - timedelta(minutes=5)
    events = list(runtime.log_events("order", since))
    assert any(e.get("event") == "service_started" for e in events)


def test_down_leaves_no_process(box: Box) -> None:
    pids = [c["pid"] for c in box.state()["components"].values()]
    assert len(pids) == len(COMPONENTS)
    done = box.lab("down")
    assert done.returncode == 0, done.stderr
    assert [p for p in pids if not process_gone(p)] == []
    assert not (box.home / "state.json").exists()
    again = box.lab("down")  # idempotent
    assert again.returncode == 0


def test_missing_redis_binary_is_one_line(tmp_path_factory: pytest.TempPathFactory) -> None:
    sandbox = make_box(tmp_path_factory, "nobinary", 14000)
    bindir = sandbox.home / "bin"
    bindir.mkdir()
    prometheus = shutil.which("prometheus")  # everything but redis-server
    if prometheus:
        (bindir / "prometheus").symlink_to(prometheus)
    done = sandbox.lab("up", "--runtime", "local", env={**sandbox.env, "PATH": str(bindir)})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "redis-server" in lines[0]
    assert "apt-get install -y redis-server" in lines[0]
    assert not (sandbox.home / "state.json").exists()


def test_persist_round_trip(tmp_path_factory: pytest.TempPathFactory) -> None:
    sandbox = make_box(tmp_path_factory, "persist", 16000)
    # The services start in interpreters of their own here, as on systems without fork.
    sandbox.env["CNOP_LAB_FORK_SERVICES"] = "false"
    try:
        redis_url = f"redis://127.0.0.1:{6380 + sandbox.offset}/0"
        up(sandbox, "--persist")
        username, password = register_account(sandbox.gateway, "persist")
        with Redis.from_url(redis_url) as redis:
            redis.set("cnop:test:persisted", "yes")
        assert sandbox.lab("down").returncode == 0
        assert (sandbox.home / "data" / "dynamodb.journal").exists()

        up(sandbox, "--persist")
        assert login_status(sandbox.gateway, username, password) == 200
        with Redis.from_url(redis_url) as redis:
            assert redis.get("cnop:test:persisted") == b"yes"
        assert sandbox.lab("down").returncode == 0

        up(sandbox)  # without --persist: a fresh, empty platform
        assert login_status(sandbox.gateway, username, password) == 401
        journal = (sandbox.home / "data" / "dynamodb.journal").read_text().splitlines()
        written = b"".join(base64.b64decode(json.loads(line)["body"]) for line in journal)
        assert username.encode() not in written  # a new journal, not the old one
        with Redis.from_url(redis_url) as redis:
            assert redis.get("cnop:test:persisted") is None
    finally:
        sandbox.lab("down")


def test_revoked_tokens_stay_revoked_after_redis_crashes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Redis runs with its append-only file on even without --persist, so `kill -9` and a
    restart within a session do not bring logged-out tokens back to life."""
    sandbox = make_box(tmp_path_factory, "aof", 18000)
    try:
        up(sandbox)
        username, password = register_account(sandbox.gateway, "persist")
        login = httpx.post(
            f"{sandbox.gateway}/api/v1/auth/login",
            json={"username": username, "password": password},
            timeout=10,
        )
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        balance = f"{sandbox.gateway}/api/v1/balance"
        assert httpx.get(balance, headers=auth, timeout=10).status_code == 200
        logout = httpx.post(
            f"{sandbox.gateway}/api/v1/auth/logout", json={}, headers=auth, timeout=10
        )
        assert logout.status_code == 200, logout.text
        assert httpx.get(balance, headers=auth, timeout=10).status_code == 401

        time.sleep(1.5)  # appendfsync everysec: the last second of writes may be lost
        pid = sandbox.state()["components"]["redis"]["pid"]
        os.kill(pid, 9)
        runtime = LocalRuntime(LabConfig(home=sandbox.home, port_offset=sandbox.offset))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            redis = next(c for c in runtime.status() if c.name == "redis")
            if redis.state != "running":
                break
            time.sleep(0.1)
        runtime.start("redis")
        assert sandbox.state()["components"]["redis"]["pid"] != pid

        # A service whose Redis dials failed while it was down waits up to a second before it
        # dials again (docs/contract.md, "Redis away"); until then reads fail open, as while
        # Redis was down. Once it is back, the logout must still hold: lost with the crash, the
        # token would be 200 from here on.
        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            seen.append(httpx.get(balance, headers=auth, timeout=10).status_code)
            if seen[-1] == 401:
                break
            time.sleep(0.2)
        assert seen[-1] == 401, seen
        later = [httpx.get(balance, headers=auth, timeout=10).status_code for _ in range(5)]
        assert later == [401] * 5, later
    finally:
        sandbox.lab("down")


def test_reset_brings_back_components_that_crashed_outside_the_lab(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`kill -9` of Redis and of the DynamoDB stand-in from outside: `lab status` names the
    crashes with the end of their logs; `lab reset` starts them before clearing state (which
    needs Redis) instead of failing, and no account is lost."""
    sandbox = make_box(tmp_path_factory, "crash", 19000)
    try:
        up(sandbox)
        username, password = register_account(sandbox.gateway, "persist")
        pids = {name: sandbox.state()["components"][name]["pid"] for name in ("redis", "dynamodb")}
        for pid in pids.values():
            os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while not all(map(process_gone, pids.values())) and time.monotonic() < deadline:
            time.sleep(0.05)

        status = sandbox.lab("status")
        assert status.returncode == 1
        said = " ".join(status.stdout.split())
        for name in pids:
            assert f"{name} exited without `lab` stopping it" in said, status.stdout
        assert "Ready to accept connections" in status.stdout  # the end of Redis's log

        reset = sandbox.lab("reset")
        assert reset.returncode == 0, reset.stdout + reset.stderr
        assert "start redis" in reset.stdout and "start dynamodb" in reset.stdout
        assert sandbox.lab("status").returncode == 0
        ready = httpx.get(f"{sandbox.gateway}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert login_status(sandbox.gateway, username, password) == 200
    finally:
        sandbox.lab("down")
