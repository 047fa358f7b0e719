"""The local runtime's pure pieces: settings, prometheus.yml, rules, logs, checks.

What needs a whole running platform lives in tests/e2e/test_lab_lifecycle.py.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import stat
import subprocess
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from scenarios.config import REPO_ROOT, LabConfig
from scenarios.runtime import current_runtime, get_runtime
from scenarios.runtime.base import SERVICES, RuntimeError_
from scenarios.runtime.local import LocalRuntime, _line_timestamp, unbindable
from scenarios.runtime.promconfig import RULES, local_jobs, render_prometheus_config

PROMTOOL = shutil.which("promtool") or "promtool"  # scripts/bootstrap.sh installs prometheus


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabConfig:
    for var in ("CNOP_LAB_PORT_OFFSET", "CNOP_LAB_RUNTIME", "CNOP_LAB_GATEWAY_PORT"):
        monkeypatch.delenv(var, raising=False)
    return LabConfig(home=tmp_path / "lab")


def test_default_ports_and_paths(config: LabConfig, tmp_path: Path) -> None:
    assert config.ports() == {
        "gateway": 8080,
        "user": 8000,
        "inventory": 8001,
        "order": 8002,
        "auth": 8003,
        "insights": 8004,
        "redis": 6380,
        "dynamodb": 8010,
        "prometheus": 9090,
    }
    assert config.metrics_ports() == {
        "gateway": 9180,
        "user": 9100,
        "inventory": 9101,
        "order": 9102,
        "auth": 9103,
        "insights": 9104,
    }
    assert config.host == "127.0.0.1"
    assert config.home == (tmp_path / "lab").resolve()
    assert config.state_file == config.home / "state.json"
    assert config.log_file("order") == config.home / "logs" / "order.log"


def test_env_overrides_and_offset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNOP_LAB_HOME", raising=False)  # the shell's own sandbox, if any
    monkeypatch.setenv("CNOP_LAB_PORT_OFFSET", "1000")
    monkeypatch.setenv("CNOP_LAB_GATEWAY_PORT", "7000")
    monkeypatch.setenv("CNOP_LAB_SERVICE_ENV", '{"CNOP_BREAKER_ENABLED": "false"}')
    cfg = LabConfig()
    assert cfg.home == tmp_path / ".lab"  # default: .lab in the current directory
    assert cfg.port("gateway") == 8000
    assert cfg.port("redis") == 7380
    assert cfg.metrics_port("insights") == 10104
    assert cfg.service_env == {"CNOP_BREAKER_ENABLED": "false"}


def test_jwt_secret_is_random_private_and_stable(config: LabConfig, tmp_path: Path) -> None:
    secret = config.jwt_secret()
    assert len(secret) >= 32
    mode = stat.S_IMODE(config.jwt_secret_file.stat().st_mode)
    assert mode == 0o600
    assert config.jwt_secret() == secret
    other = LabConfig(home=tmp_path / "other")
    assert other.jwt_secret() != secret


def test_services_get_a_private_internal_secret_apart_from_the_jwt_secret(
    config: LabConfig,
) -> None:
    runtime = LocalRuntime(config)
    state = {
        "host": config.host,
        "ports": config.ports(),
        "metrics_ports": config.metrics_ports(),
        "table_prefix": config.table_prefix,
    }
    jwt = config.jwt_secret()
    for name in SERVICES:
        _, env = runtime._command(name, state, jwt)
        assert env["CNOP_JWT_SECRET"] == jwt
        assert env["CNOP_INTERNAL_SECRET"] == config.internal_secret() != jwt
    assert len(config.internal_secret()) >= 32
    assert stat.S_IMODE(config.internal_secret_file.stat().st_mode) == 0o600
    # The lab reaches a backend directly as the operator, with the same credential.
    assert runtime.internal_headers() == {"X-CNOP-Internal-Token": config.internal_secret()}
    assert LabConfig(home=config.home / "other").internal_secret() != config.internal_secret()


def _render(config: LabConfig) -> str:
    return render_prometheus_config(
        config.monitoring_dir,
        local_jobs(config.host, config.metrics_ports(), config.port("prometheus")),
        runtime="local",
        sandbox=str(config.home),
        scrape_interval="1s",
        rule_files=[config.monitoring_dir / RULES],
    )


def test_prometheus_config_has_a_job_per_service(config: LabConfig) -> None:
    doc = yaml.safe_load(_render(config))
    assert doc["global"]["scrape_interval"] == "1s"
    jobs = {job["job_name"]: job for job in doc["scrape_configs"]}
    assert set(jobs) == {*SERVICES, "prometheus"}
    assert jobs["order"]["static_configs"][0]["targets"] == ["127.0.0.1:9102"]
    assert jobs["gateway"]["static_configs"][0]["targets"] == ["127.0.0.1:9180"]
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["127.0.0.1:9090"]
    assert doc["rule_files"] == [str(REPO_ROOT / "monitoring" / "rules.yml")]


def test_promtool_accepts_rendered_config(config: LabConfig, tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(_render(config))
    done = subprocess.run(
        [PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_rules() -> None:
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(REPO_ROOT / "monitoring" / "rules.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_fire_on_open_breaker_and_login_blocks(tmp_path: Path) -> None:
    """promtool's rule unit test: the alerts really fire on the contract's metrics."""
    shutil.copy(REPO_ROOT / "monitoring" / "rules.yml", tmp_path / "rules.yml")
    (tmp_path / "test.yml").write_text(
        textwrap.dedent(
            """
            rule_files: [rules.yml]
            evaluation_interval: 5s
            tests:
              - interval: 5s
                input_series:
                  - series: 'cnop_circuit_breaker_state{job="gateway",upstream="order"}'
                    values: '0 0 1 1 1 1 1'
                  - series: 'cnop_ip_blocks_total{job="gateway"}'
                    values: '0 0 1 1 1 1 1'
                alert_rule_test:
                  - eval_time: 5s
                    alertname: CnopCircuitBreakerOpen
                    exp_alerts: []
                  - eval_time: 30s
                    alertname: CnopCircuitBreakerOpen
                    exp_alerts:
                      - exp_labels: {severity: warning, upstream: order}
                        exp_annotations:
                          summary: "the gateway's breaker to order is open"
                  - eval_time: 30s
                    alertname: CnopLoginBlocks
                    exp_alerts:
                      - exp_labels: {severity: info}
                        exp_annotations:
                          summary: "logins are blocked: password guessing under way"
            """
        )
    )
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_log_lines_since_filters_by_each_format(config: LabConfig) -> None:
    config.ensure_dirs()
    config.log_file("gateway").write_text(
        "\n".join(
            [
                json.dumps({"timestamp": "2026-01-01T10:00:00.000+00:00", "event": "old"}),
                "a line without time follows the old one",
                json.dumps({"timestamp": "2026-01-01T10:05:00.000+00:00", "event": "new"}),
                "a traceback line follows the new one",
            ]
        )
        + "\n"
    )
    runtime = LocalRuntime(config)
    since = datetime(2026, 1, 1, 10, 1, tzinfo=UTC)
    lines = list(runtime.log_lines("gateway", since))
    assert len(lines) == 2 and '"new"' in lines[0] and "traceback" in lines[1]
    assert [e["event"] for e in runtime.log_events("gateway", since)] == ["new"]
    assert len(list(runtime.log_lines("gateway"))) == 4
    assert list(runtime.log_lines("order")) == []  # no log yet
    with pytest.raises(RuntimeError_, match="unknown component"):
        list(runtime.log_lines("nope"))


def test_infra_log_timestamps() -> None:
    redis = "1234:M 25 Nov 2026 08:17:19.211 * Ready to accept connections"
    assert _line_timestamp(redis) == datetime(2026, 11, 25, 8, 17, 19, 211000, tzinfo=UTC)
    prom = 'ts=2026-11-25T08:17:19.500Z caller=main.go level=info msg="Server is ready"'
    assert _line_timestamp(prom) == datetime(2026, 11, 25, 8, 17, 19, 500000, tzinfo=UTC)
    assert _line_timestamp("127.0.0.1 - - GET /") is None


def test_missing_binary_is_one_line_with_the_install_command(config: LabConfig) -> None:
    cfg = config.model_copy(update={"redis_server_bin": "redis-server-missing-here"})
    with pytest.raises(RuntimeError_) as info:
        LocalRuntime(cfg).up(timeout=5)
    message = str(info.value)
    assert "\n" not in message
    assert "redis-server-missing-here" in message
    assert "apt-get install -y redis-server" in message
    assert not cfg.state_file.exists()


def test_port_in_use_is_refused_before_anything_starts(config: LabConfig) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = config.model_copy(update={"gateway_port": port})
        with pytest.raises(RuntimeError_, match=rf"port {port} \(gateway\)"):
            LocalRuntime(cfg).up(timeout=5)
    assert not cfg.state_file.exists()
    assert not cfg.logs_dir.exists() or not any(cfg.logs_dir.iterdir())


def test_operations_on_a_stopped_sandbox_say_so(config: LabConfig) -> None:
    runtime = LocalRuntime(config)
    assert not runtime.is_up()
    runtime.down()  # nothing to do, no error
    for action in (runtime.kill, runtime.start, runtime.pause):
        with pytest.raises(RuntimeError_, match="not running"):
            action("order")
    with pytest.raises(RuntimeError_, match="not running"):
        runtime.set_fault("order", "latency", {"ms": 10}, 5)
    with pytest.raises(RuntimeError_, match="unknown fault"):
        runtime.set_fault("order", "meteor", {}, 5)
    assert {s.state for s in runtime.status()} == {"stopped"}
    assert runtime.endpoints().gateway == "http://127.0.0.1:8080"


def test_get_and_current_runtime(config: LabConfig) -> None:
    assert isinstance(get_runtime("local", config), LocalRuntime)
    with pytest.raises(RuntimeError_, match="unknown runtime"):
        get_runtime("podman", config)
    if importlib.util.find_spec("scenarios.runtime.docker") is None:
        with pytest.raises(RuntimeError_, match="docker runtime is not available"):
            get_runtime("docker", config)
    assert current_runtime(config) is None
    config.ensure_dirs()
    config.state_file.write_text(json.dumps({"runtime": "local"}))
    assert isinstance(current_runtime(config), LocalRuntime)
    config.state_file.write_text("{not json")
    with pytest.raises(RuntimeError_, match="unreadable"):
        current_runtime(config)


def test_a_missing_loopback_alias_is_one_line_naming_the_fix(config: LabConfig) -> None:
    """macOS has only 127.0.0.1 on lo0: the drill says which aliases to add, in one line."""
    assert unbindable(["127.0.0.1", "127.0.0.21", "127.0.0.1"]) == []
    assert unbindable(["127.0.0.1", "192.0.2.7"]) == ["192.0.2.7"]  # TEST-NET: never local
    with pytest.raises(RuntimeError_) as info:
        LocalRuntime(config).client_addresses(["127.0.0.21", "192.0.2.7"])
    message = str(info.value)
    assert "\n" not in message
    assert "for a in 192.0.2.7; do sudo ifconfig lo0 alias $a up; done" in message
