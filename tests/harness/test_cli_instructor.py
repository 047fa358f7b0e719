"""`lab assignment new` and `lab submit` as a user types them (no platform needed)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from grader.assignments import load_assignment
from lab import app


def test_assignment_new_says_which_file_is_which_and_reads_weaken(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app,
        [
            "assignment",
            "new",
            "wk4",
            "--scenario",
            "order-race",
            "--weaken",
            "order-race",
            "--weaken",
            "gateway:CNOP_BREAKER_ENABLED=false",
            "--due",
            "2026-12-01",
            "--hint-cost",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert done.exit_code == 0, done.output
    assert f"for students:       {tmp_path / 'wk4.assignment.json'}" in done.output
    assert f"for the instructor: {tmp_path / 'wk4.key.json'}" in done.output
    assignment = load_assignment(tmp_path / "wk4.assignment.json")
    assert assignment.settings == {
        "order": {"CNOP_LOCKS_ENABLED": "false", "CNOP_ORDER_CONDITIONAL_WRITES": "false"},
        "gateway": {"CNOP_BREAKER_ENABLED": "false"},
    }
    assert assignment.due is not None and assignment.due.isoformat() == "2026-12-01T23:59:59+00:00"
    assert assignment.hint_cost == 2
    assert assignment.scenarios[0].parameters["concurrency"] == 50


def test_assignment_new_rejects_what_it_cannot_use_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (
        ["--scenario", "no-such-drill"],
        ["--scenario", "order-race", "--weaken", "breaker off"],
        ["--scenario", "order-race", "--due", "next friday"],
    ):
        done = runner.invoke(app, ["assignment", "new", "wk", *args, "--out", str(tmp_path)])
        assert done.exit_code == 2, (args, done.output)
        assert "Traceback" not in done.output


def test_submit_refuses_a_run_not_made_for_the_assignment(tmp_path: Path) -> None:
    runner = CliRunner()
    runner.invoke(
        app, ["assignment", "new", "wk5", "--scenario", "order-race", "--out", str(tmp_path)]
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"scenario": "order-race", "checks": []}))
    done = runner.invoke(
        app, ["submit", str(run), "--assignment", str(tmp_path / "wk5.assignment.json")]
    )
    assert done.exit_code == 2
    assert "was not run for assignment wk5" in done.output
