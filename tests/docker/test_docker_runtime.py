"""The Docker runtime end to end: a real compose project, real containers, real faults."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from scenarios.runtime.base import SERVICES, RuntimeError_
from scenarios.runtime.docker import DockerRuntime
from tests.docker.conftest import UP_BUDGET_SECONDS, DockerSandbox, project_leftovers
from tests.sandbox import login_status, register_account

pytestmark = pytest.mark.docker

ASSETS = "/api/v1/inventory/assets"
BACKENDS = ("user", "inventory", "order", "auth", "insights", "redis", "dynamodb")


def _status(box: DockerSandbox, name: str) -> str:
    return {s.name: s for s in box.runtime.status()}[name].state


def _eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"not within {timeout:.0f} s: {what}")


def _assets_status(box: DockerSandbox, timeout: float = 10) -> int:
    try:
        return httpx.get(box.endpoints.gateway + ASSETS, timeout=timeout).status_code
    except httpx.TimeoutException:
        return 0


def _inspect(container: str) -> dict:
    out = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]


def _container_id(box: DockerSandbox, name: str) -> str:
    return box.runtime._containers()[name]["id"]


def test_up_is_ready_within_budget(docker_sandbox: DockerSandbox) -> None:
    print(f"DockerRuntime.up took {docker_sandbox.up_seconds:.1f} s")
    assert docker_sandbox.up_seconds < UP_BUDGET_SECONDS
    states = {s.name: (s.state, s.ready) for s in docker_sandbox.runtime.status()}
    assert all(v == ("running", True) for v in states.values()), states
    assert docker_sandbox.runtime.is_up()


def test_services_are_checked_often_while_starting_where_the_engine_can(
    docker_sandbox: DockerSandbox,
) -> None:
    """The probe itself answers healthy, and Docker Engine 25+ runs it every half second
    until the service is healthy (the override's start_interval; older engines refuse it)."""
    api = docker_sandbox.runtime._engine_api()
    for name in SERVICES:
        info = _inspect(_container_id(docker_sandbox, name))
        assert info["State"]["Health"]["Status"] == "healthy", name
        check = info["Config"]["Healthcheck"]
        expected = 500_000_000 if api >= (1, 44) else None
        assert check.get("StartInterval") == expected, (name, api, check)


def test_gateway_health_on_loopback_only(docker_sandbox: DockerSandbox) -> None:
    response = httpx.get(docker_sandbox.endpoints.gateway + "/health", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert docker_sandbox.endpoints.gateway.startswith("http://127.0.0.1:")
    for name in ("gateway", "prometheus"):
        ports = _inspect(_container_id(docker_sandbox, name))["NetworkSettings"]["Ports"]
        bindings = [b for binds in ports.values() if binds for b in binds]
        assert bindings, f"{name} is not published"
        assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, bindings
    ready = httpx.get(docker_sandbox.endpoints.prometheus + "/-/ready", timeout=5)
    assert ready.status_code == 200


def test_prometheus_scrapes_every_service(docker_sandbox: DockerSandbox) -> None:
    url = docker_sandbox.endpoints.prometheus + "/api/v1/targets"

    def all_up() -> bool:
        targets = httpx.get(url, timeout=5).json()["data"]["activeTargets"]
        healthy = {t["labels"]["job"] for t in targets if t["health"] == "up"}
        return set(SERVICES) <= healthy

    _eventually(all_up, 20, "Prometheus scrapes all six services")


def test_backends_are_not_reachable_from_outside(docker_sandbox: DockerSandbox) -> None:
    box = docker_sandbox
    for name in BACKENDS:
        info = _inspect(_container_id(box, name))
        ports = info["NetworkSettings"]["Ports"] or {}
        assert not any(ports.values()), f"{name} publishes {ports}"
        assert list(info["NetworkSettings"]["Networks"]) == [f"{box.project}_backend"]
    network = subprocess.run(
        ["docker", "network", "inspect", f"{box.project}_backend"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(network)[0]["Internal"] is True
    auth_ip = _inspect(_container_id(box, "auth"))["NetworkSettings"]["Networks"][
        f"{box.project}_backend"
    ]["IPAddress"]
    image = box.runtime._image_vars()["CNOP_IMAGE"]
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(('{auth_ip}', 8003), 2)\n"
        "except OSError:\n"
        "    sys.exit(7)\n"
    )
    # A container outside the platform's networks cannot reach a backend...
    outside = subprocess.run(
        ["docker", "run", "--rm", "--network", "bridge", image, "python3", "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert outside.returncode == 7, outside.stderr
    # ...while the gateway, on the internal network, can (so the probe itself is sound).
    inside = subprocess.run(
        ["docker", "exec", _container_id(box, "gateway"), "python3", "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert inside.returncode == 0, inside.stderr
    # And the backends have no way out either (internal network: no egress).
    egress = subprocess.run(
        [
            "docker",
            "exec",
            _container_id(box, "auth"),
            "python3",
            "-c",
            probe.replace(auth_ip, "1.1.1.1").replace("8003", "53"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert egress.returncode == 7


def test_kill_and_start_a_service(docker_sandbox: DockerSandbox) -> None:
    box = docker_sandbox
    assert _assets_status(box) == 200
    box.runtime.kill("inventory")
    assert _status(box, "inventory") == "exited"
    assert _assets_status(box) in (502, 503, 504)
    started = time.perf_counter()
    box.runtime.start("inventory")
    print(f"inventory ready again {time.perf_counter() - started:.1f} s after start()")
    assert _status(box, "inventory") == "running"
    # The gateway's breaker may still be open for a few seconds after the outage.
    _eventually(lambda: _assets_status(box) == 200, 20, "assets served again")


def test_a_killed_dynamodb_keeps_every_account(docker_sandbox: DockerSandbox) -> None:
    """The stand-in's journal replays on start: `docker kill` loses no table, no account."""
    box = docker_sandbox
    gateway = box.endpoints.gateway
    username, password = register_account(gateway, "durable")
    box.runtime.kill("dynamodb")
    assert _status(box, "dynamodb") == "exited"
    box.runtime.start("dynamodb")
    _eventually(lambda: login_status(gateway, username, password) == 200, 30, "the account is back")


def test_pause_and_resume(docker_sandbox: DockerSandbox) -> None:
    box = docker_sandbox
    _eventually(lambda: _assets_status(box) == 200, 20, "assets served")
    box.runtime.pause("inventory")
    try:
        assert _status(box, "inventory") == "paused"
        began = time.perf_counter()
        assert _assets_status(box, timeout=15) in (502, 503, 504)
        assert time.perf_counter() - began < 12  # the gateway's timeout, not the client's
    finally:
        box.runtime.resume("inventory")
    assert _status(box, "inventory") == "running"
    _eventually(lambda: _assets_status(box) == 200, 20, "assets served after resume")


def test_fault_flag_round_trip(docker_sandbox: DockerSandbox) -> None:
    box = docker_sandbox
    since = datetime.now(UTC)
    box.runtime.set_fault("inventory", "error_rate", {"rate": 1.0, "status": 500}, 60)
    ttl = int(box.runtime.redis_command("TTL", "cnop:fault:inventory:error_rate").split()[-1])
    assert 0 < ttl <= 60
    try:
        _eventually(lambda: _assets_status(box) == 500, 10, "the error fault applies")
    finally:
        cleared = box.runtime.clear_faults("inventory")
    assert cleared == 1
    assert box.runtime.clear_faults("inventory") == 0
    _eventually(lambda: _assets_status(box) == 200, 20, "served again once cleared")
    events = [e.get("event") for e in box.runtime.log_events("inventory", since)]
    assert "fault_injected" in events and "fault_cleared" in events


def test_clear_state_keys_keeps_revocations(docker_sandbox: DockerSandbox) -> None:
    rt = docker_sandbox.runtime
    rt.redis_command("SET", "cnop:revoked:testjti", "1", "EX", "60")
    rt.redis_command("SET", "cnop:lock:user:someone", "x", "EX", "60")
    rt.set_fault("order", "latency", {"ms": 10}, 60)
    assert rt.clear_state_keys() >= 2
    assert rt.redis_command("EXISTS", "cnop:revoked:testjti").split()[-1] == "1"
    assert rt.redis_command("EXISTS", "cnop:lock:user:someone").split()[-1] == "0"
    rt.redis_command("DEL", "cnop:revoked:testjti")


def test_partition_and_heal(docker_sandbox: DockerSandbox) -> None:
    box = docker_sandbox
    _eventually(lambda: _assets_status(box) == 200, 20, "assets served")
    box.runtime.partition("inventory")
    try:
        assert _assets_status(box, timeout=15) in (502, 503, 504)
        assert _status(box, "inventory") == "running"  # alive, just unreachable
    finally:
        box.runtime.heal("inventory")
    _eventually(lambda: _assets_status(box) == 200, 25, "served again after heal")


def test_reconfigure_a_service(docker_sandbox: DockerSandbox) -> None:
    box = docker_sandbox
    box.runtime.clear_state_keys()
    since = datetime.now(UTC)
    box.runtime.reconfigure("gateway", {"CNOP_RATE_LIMIT_IP_LIMIT": "3"})
    try:
        codes = [_assets_status(box) for _ in range(6)]
        assert 429 in codes, codes
    finally:
        box.runtime.reconfigure("gateway", None)
        box.runtime.clear_state_keys()
    codes = [_assets_status(box) for _ in range(6)]
    assert codes == [200] * 6, codes
    # The recreated container's predecessor logged the limits; its lines are kept.
    events = [e.get("event") for e in box.runtime.log_events("gateway", since)]
    assert "rate_limited" in events
    with pytest.raises(RuntimeError_):
        box.runtime.reconfigure("gateway", {"NOT_CNOP": "1"})


def _from(address: str | None, base_url: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=base_url, transport=transport, timeout=15)


def test_a_forged_forwarded_for_picks_no_client_address(docker_sandbox: DockerSandbox) -> None:
    """Every client claims another address in X-Forwarded-For; the limit and the login block
    still hit the address it really sends from, and only that one."""
    box = docker_sandbox
    rt = box.runtime
    net = rt.client_addresses(["127.0.0.61", "127.0.0.62"])
    assert not net.note, net.note
    mine, other = net.source("127.0.0.61"), net.source("127.0.0.62")
    assert mine and other and mine != other
    rt.clear_state_keys()
    rt.reconfigure("gateway", {"CNOP_RATE_LIMIT_IP_LIMIT": "3"})
    try:
        # Through the published port (Docker's port proxy) and from an edge address alike.
        for client in (_from(None, box.endpoints.gateway), _from(mine, net.gateway)):
            with client:
                codes = [
                    client.get(ASSETS, headers={"X-Forwarded-For": f"10.9.0.{i}"}).status_code
                    for i in range(1, 6)
                ]
            assert codes == [200, 200, 200, 429, 429], codes
        with _from(other, net.gateway) as client:
            assert client.get(ASSETS, headers={"X-Forwarded-For": mine}).status_code == 200
    finally:
        rt.reconfigure("gateway", None)
        rt.clear_state_keys()
    try:
        with _from(mine, net.gateway) as client:
            codes = []
            for i in range(1, 7):
                body = {"username": f"nobody_{i}", "password": f"Wrong-Guess-{i:05d}x"}
                claim = {"X-Forwarded-For": f"10.8.0.{i}"}
                codes.append(client.post("/api/v1/auth/login", json=body, headers=claim))
        assert [r.status_code for r in codes] == [401] * 5 + [403], [r.text for r in codes]
        with _from(other, net.gateway) as client:
            body = {"username": "nobody_7", "password": "Wrong-Guess-00007x"}
            assert client.post("/api/v1/auth/login", json=body).status_code == 401
    finally:
        rt.clear_state_keys()


def test_unknown_names_are_one_line_errors(docker_sandbox: DockerSandbox) -> None:
    with pytest.raises(RuntimeError_, match="unknown component"):
        docker_sandbox.runtime.kill("nginx")
    with pytest.raises(RuntimeError_, match="unknown fault"):
        docker_sandbox.runtime.set_fault("inventory", "explode", {}, 10)


def test_missing_docker_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    runtime = DockerRuntime(project="cnop-nodocker")
    with pytest.raises(RuntimeError_) as caught:
        runtime.up()
    message = str(caught.value)
    assert "docker is not installed" in message and "\n" not in message


def _is_host_address(address: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def test_down_leaves_nothing_behind(docker_sandbox: DockerSandbox) -> None:
    box = docker_sandbox
    added = box.runtime.client_addresses(["127.0.0.63"]).sources.values()
    assert added and all(a and _is_host_address(a) for a in added)
    box.runtime.down()
    box.down_done = True
    assert not box.runtime.is_up()
    assert project_leftovers(box.project) == {"containers": [], "networks": [], "volumes": []}
    assert not [a for a in added if a and _is_host_address(a)]  # the client addresses are gone
    assert not box.runtime.config.state_file.exists()
    box.runtime.down()  # idempotent


def test_persist_keeps_data_across_down_and_up(docker_sandbox: DockerSandbox) -> None:
    """`lab up --persist` on Docker: `down` keeps the volumes, the next `up --persist` finds
    the accounts; a plain `up` starts empty and removes them."""
    runtime = docker_sandbox.runtime
    assert docker_sandbox.down_done  # after test_down_leaves_nothing_behind
    try:
        gateway = runtime.up(persist=True, timeout=180).gateway
        username, password = register_account(gateway, "durable")
        runtime.down()
        assert project_leftovers(docker_sandbox.project)["volumes"]
        gateway = runtime.up(persist=True, timeout=180).gateway
        assert login_status(gateway, username, password) == 200
        runtime.down()
        gateway = runtime.up(timeout=180).gateway
        assert login_status(gateway, username, password) == 401
    finally:
        runtime.down()
    assert project_leftovers(docker_sandbox.project)["volumes"] == []
