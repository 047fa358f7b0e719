"""`lab logs`, `lab run`'s table and what a run records: tested on a sandbox folder written by
hand (state.json, log files), so no platform has to run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from grader.model import CheckResult
from lab import app
from scenarios.cli_drills import _print_result
from scenarios.config import LabConfig
from scenarios.runtime.local import LocalRuntime
from tests.grader.samples import sample_result

STARTED = "2026-11-27T10:00:00+00:00"


def _line(when: str, event: str, **fields: object) -> str:
    return json.dumps(
        {"timestamp": when, "level": "info", "service": "order", "event": event, **fields}
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stopped local sandbox that was started at STARTED, with an order log that also holds
    lines of an earlier session."""
    monkeypatch.setenv("CNOP_LAB_HOME", str(tmp_path))
    monkeypatch.setenv("CNOP_LAB_RUNTIME", "local")
    monkeypatch.delenv("CNOP_LAB_SERVICE_ENV", raising=False)
    state = {
        "runtime": "local",
        "version": 1,
        "started_at": STARTED,
        "service_env": {},
        "overrides": {},
        "components": {},
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    (tmp_path / "logs").mkdir()
    lines = [
        _line("2026-11-26T09:00:00.000+00:00", "order_rejected", reason="earlier_session"),
        _line("2026-11-27T10:00:01.000+00:00", "service_started", port=8002),
        _line(
            "2026-11-27T10:00:01.100+00:00",
            "Uvicorn running on http://127.0.0.1:8002 (Press CTRL+C to quit)",
            color_message="Uvicorn running on \u001b[1mhttp://127.0.0.1:8002\u001b[0m",
        ),
        _line("2026-11-27T10:00:05.000+00:00", "order_rejected", reason="insufficient_funds"),
        _line("2026-11-27T10:00:06.000+00:00", "lock_lost", operation="order"),
    ]
    (tmp_path / "logs" / "order.log").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_lab_logs_shows_only_the_current_sandboxs_lines(home: Path) -> None:
    out = CliRunner().invoke(app, ["logs", "order"])
    assert out.exit_code == 0, out.output
    assert "earlier_session" not in out.output
    assert "insufficient_funds" in out.output
    every = CliRunner().invoke(app, ["logs", "order", "--since", "2026-11-26T00:00:00Z"])
    assert "earlier_session" in every.output


def test_lab_logs_event_keeps_only_that_event(home: Path) -> None:
    out = CliRunner().invoke(app, ["logs", "order", "--event", "order_rejected"])
    assert out.exit_code == 0, out.output
    events = [json.loads(line)["event"] for line in out.output.splitlines()]
    assert events == ["order_rejected"]
    both = CliRunner().invoke(app, ["logs", "order", "-e", "order_rejected", "-e", "lock_lost"])
    assert [json.loads(x)["event"] for x in both.output.splitlines()] == [
        "order_rejected",
        "lock_lost",
    ]


def test_lab_logs_drops_uvicorns_ansi_color_message(home: Path) -> None:
    out = CliRunner().invoke(app, ["logs", "order"])
    assert "color_message" not in out.output and "\u001b[" not in out.output
    assert "Uvicorn running on http://127.0.0.1:8002" in out.output


def test_the_sandbox_records_what_settings_are_in_force(home: Path) -> None:
    runtime = LocalRuntime(LabConfig())
    assert runtime.sandbox_started_at() == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert runtime.settings_in_force() == {}
    state = json.loads((home / "state.json").read_text())
    state["service_env"] = {"CNOP_LOG_LEVEL": "DEBUG"}
    state["overrides"] = {"gateway": {"CNOP_BREAKER_ENABLED": "false"}}
    (home / "state.json").write_text(json.dumps(state))
    in_force = runtime.settings_in_force()
    assert in_force["gateway"] == {"CNOP_BREAKER_ENABLED": "false", "CNOP_LOG_LEVEL": "DEBUG"}
    assert in_force["order"] == {"CNOP_LOG_LEVEL": "DEBUG"}


def test_lab_run_table_names_each_check_id_and_the_real_mode() -> None:
    result = sample_result()
    money = CheckResult(
        id="no-overdraft",
        title="The balance never goes below zero",
        kind="invariant",
        passed=True,
        points=3,
        max_points=3,
        required=True,
        evidence={"observed": "balance 200.00 USD"},
    )
    result = result.model_copy(update={"checks": [*result.checks, money], "mode": "custom"})
    console = Console(record=True, width=200)
    _print_result(result, None, console)
    text = console.export_text()
    for check in result.checks:
        assert check.id in text
    assert "balance 200.00 USD" in text
    assert "weakened (custom)" in text
