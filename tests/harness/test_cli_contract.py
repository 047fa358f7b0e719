"""What an autograder relies on, for every `lab` command, without a running platform: the exit
code (0 passed, 1 graded and failed, 2 usage error, 3 could not run or grade), one line on
stderr, and with ``--json`` one JSON object on stdout (docs/cli.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lab import app
from scenarios.cli_support import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    LabGroup,
    did_you_mean,
)
from scenarios.runtime.base import RuntimeError_

LAB = str(Path(sys.executable).parent / "lab")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty sandbox: nothing runs in it."""
    monkeypatch.setenv("CNOP_LAB_HOME", str(tmp_path / "lab-home"))
    monkeypatch.setenv("CNOP_LAB_RUNTIME", "local")
    monkeypatch.delenv("CNOP_LAB_SERVICE_ENV", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _lab(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _one_error_line(out: Any) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("lab: ")
    return lines[0]


# --- 2: usage errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "uptream-outage"], "did you mean 'upstream-outage'?"),
        (["scenarios", "order-rase"], "did you mean 'order-race'?"),
        (["selftest", "--only", "login-flod"], "did you mean 'login-flood'?"),
        (["selftest", "--max-time", "30"], "go with --security"),
        (["selftest", "--security", "--engine", "zapp"], "unknown engine 'zapp'"),
        (["run", "order-race", "--param", "concurency=3"], "did you mean 'concurrency'?"),
        (["run", "order-race", "--param", "concurrency=500"], "above the maximum 200"),
        (["run", "order-race", "--param", "concurrency=1"], "below the minimum 2"),
        (["run", "order-race", "--param", "concurrency=2.5"], "expected an integer"),
        (["run", "order-race", "--param", "concurrency"], "expected KEY=VALUE"),
        (["run", "order-race", "--set", "ordr:CNOP_LOCKS_ENABLED=false"], "did you mean 'order'?"),
        (["run", "order-race", "--set", "order:LOCKS=false"], "SERVICE:CNOP_SETTING=VALUE"),
        (["logs", "gatewy"], "did you mean 'gateway'?"),
        (["logs", "gateway", "--since", "yesterday"], "give a duration"),
        (["up", "--runtime", "lcoal"], "did you mean 'local'?"),
        (["report", "no-such-run"], "holds no result.json"),
        (["query", "up", "--watch", "1", "--json"], "use --json without it"),
        (["submit", "no-such-run"], "no --assignment given"),
        (["assignment", "new", "w1", "--scenario", "order-rac"], "did you mean 'order-race'?"),
    ],
)
def test_usage_errors_exit_2_with_one_line_that_names_the_fix(
    home: Path, args: list[str], says: str
) -> None:
    out = _lab(*args)
    assert out.exit_code == EXIT_USAGE, out.output
    assert says in _one_error_line(out)


def test_weaken_and_set_cannot_change_an_assignments_settings(home: Path) -> None:
    made = _lab("assignment", "new", "w1", "--scenario", "order-race", "--out", str(home))
    assert made.exit_code == 0, made.output
    out = _lab(
        "run", "order-race", "--weaken", "--assignment", str(home / "w1.assignment.json"),
        "--student", "s1",
    )  # fmt: skip
    assert out.exit_code == EXIT_USAGE
    assert "assignment's settings" in _one_error_line(out)


def test_unknown_options_and_commands_are_usage_errors(home: Path) -> None:
    assert _lab("run", "order-race", "--bogus").exit_code == EXIT_USAGE
    assert _lab("no-such-command").exit_code == EXIT_USAGE
    assert _lab("status", "--bogus").exit_code == EXIT_USAGE


def test_a_usage_error_with_json_is_also_a_json_object_on_stdout(home: Path) -> None:
    out = _lab("run", "order-race", "--param", "concurrency=500", "--json")
    assert out.exit_code == EXIT_USAGE
    doc = json.loads(out.stdout)
    assert doc["command"] == "run" and doc["exit_code"] == EXIT_USAGE
    assert "above the maximum" in doc["error"]


# --- 3: the platform is not running ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["run", "order-race"],
        ["run", "order-race", "--weaken"],
        ["drill"],
        ["selftest", "--only", "order-race"],
        ["reset"],
        ["walkthrough"],
        ["query", "up"],
    ],
)
def test_commands_that_need_the_platform_exit_3_when_it_is_not_running(
    home: Path, args: list[str]
) -> None:
    out = _lab(*args)
    assert out.exit_code == EXIT_UNAVAILABLE, out.output
    assert "not running" in _one_error_line(out)
    as_json = _lab(*args, "--json")
    assert as_json.exit_code == EXIT_UNAVAILABLE
    doc = json.loads(as_json.stdout)
    assert doc["command"] == args[0] and doc["exit_code"] == EXIT_UNAVAILABLE
    assert "not running" in doc["error"]


def test_the_installed_lab_command_exits_with_the_same_codes(home: Path) -> None:
    env = {**os.environ, "CNOP_LAB_HOME": str(home / "lab-home"), "CNOP_LAB_RUNTIME": "local"}

    def code(*args: str) -> int:
        return subprocess.run(
            [LAB, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        ).returncode

    assert code("scenarios") == EXIT_OK
    assert code("status") == EXIT_UNAVAILABLE
    assert code("run", "uptream-outage") == EXIT_USAGE
    assert code("run", "order-race", "--nope") == EXIT_USAGE


def test_images_without_docker_exits_3(home: Path) -> None:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "CNOP_LAB_HOME": str(home / "lab-home"),
        "HOME": str(home),
    }
    done = subprocess.run(
        [LAB, "images", "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    assert "docker is not installed" in json.loads(done.stdout)["error"]


def test_an_unexpected_error_is_exit_3_and_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNOP_LAB_DEBUG", raising=False)
    toy = typer.Typer(cls=LabGroup)

    @toy.command()
    def boom() -> None:
        raise ZeroDivisionError("no")

    @toy.command()
    def down() -> None:
        raise RuntimeError_("docker is not installed")

    out = CliRunner().invoke(toy, ["boom"])
    assert out.exit_code == EXIT_UNAVAILABLE
    assert "internal error: ZeroDivisionError" in _one_error_line(out)
    out = CliRunner().invoke(toy, ["down"])
    assert out.exit_code == EXIT_UNAVAILABLE and "docker" in _one_error_line(out)


# --- 0 and 1, with --json shapes -----------------------------------------------------------


def test_scenarios_json_lists_every_drill(home: Path) -> None:
    out = _lab("scenarios", "--json")
    assert out.exit_code == EXIT_OK, out.output
    doc = json.loads(out.stdout)
    assert doc["command"] == "scenarios" and doc["exit_code"] == 0
    names = [s["name"] for s in doc["scenarios"]]
    assert "upstream-outage" in names and len(names) >= 8
    first = doc["scenarios"][0]
    assert set(first) == {"name", "title", "description", "checks", "max_score"}


def test_scenarios_name_shows_parameters_with_bounds_weaken_and_checks(home: Path) -> None:
    out = _lab("scenarios", "order-race", "--json")
    assert out.exit_code == EXIT_OK, out.output
    scenario = json.loads(out.stdout)["scenario"]
    concurrency = next(p for p in scenario["parameters"] if p["name"] == "concurrency")
    assert concurrency == {
        "name": "concurrency",
        "type": "int",
        "default": 50,
        "min": 2,
        "max": 200,
        "choices": None,
        "help": "orders sent at the same moment",
    }
    assert scenario["weaken"] == {
        "order": {"CNOP_LOCKS_ENABLED": "false", "CNOP_ORDER_CONDITIONAL_WRITES": "false"}
    }
    guarded = {c["id"] for c in scenario["checks"] if c["guards"]}
    assert "no-negative-balance" in guarded
    text = _lab("scenarios", "order-race")
    assert text.exit_code == EXIT_OK
    for shown in ("concurrency", "2..200", "CNOP_LOCKS_ENABLED=false", "no-negative-bal"):
        assert shown in text.stdout


def test_a_broken_scenario_file_makes_the_listing_exit_1(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import scenarios.schema as schema

    shipped = Path(schema.__file__).parent / "order-race.yaml"
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "order-race.yaml").write_text(shipped.read_text())
    (folder / "broken.yaml").write_text("name: broken\n")
    monkeypatch.setattr(schema, "SCENARIO_DIR", folder)
    monkeypatch.setattr(schema.available, "__defaults__", (folder,))
    out = _lab("scenarios", "--json")
    assert out.exit_code == EXIT_FAILED
    listed = {s["name"]: s for s in json.loads(out.stdout)["scenarios"]}
    assert "error" in listed["broken"] and "error" not in listed["order-race"]


def test_down_json_when_nothing_runs(home: Path) -> None:
    out = _lab("down", "--json")
    assert out.exit_code == EXIT_OK
    doc = json.loads(out.stdout)
    assert doc == {
        "command": "down",
        "exit_code": 0,
        "stopped": False,
        "runtime": None,
        "sandbox": str(home / "lab-home"),
    }


def test_report_json_names_the_rendered_page(home: Path) -> None:
    from tests.grader.samples import sample_result

    run_dir = home / "run"
    run_dir.mkdir()
    (run_dir / "result.json").write_text(sample_result().model_dump_json())
    out = _lab("report", str(run_dir), "--json")
    assert out.exit_code == EXIT_OK, out.output
    doc = json.loads(out.stdout)
    assert doc["report"] == str(run_dir / "report.html") and (run_dir / "report.html").exists()


def test_grade_exits_1_and_lists_an_unverifiable_bundle_in_json(home: Path) -> None:
    made = _lab("assignment", "new", "w1", "--scenario", "order-race", "--out", str(home), "--json")
    assert made.exit_code == EXIT_OK, made.output
    files = json.loads(made.stdout)
    assert files["command"] == "assignment new" and files["name"] == "w1"
    bogus = home / "bundles" / "s9-w1.zip"
    bogus.parent.mkdir()
    bogus.write_bytes(b"not a zip")
    out = _lab(
        "grade", str(bogus.parent), "--assignment", files["assignment"], "--key", files["key"],
        "--out", str(home / "book"), "--json",
    )  # fmt: skip
    assert out.exit_code == EXIT_FAILED, out.output
    doc = json.loads(out.stdout)
    assert doc["command"] == "grade" and doc["assignment"] == "w1"
    [student] = doc["students"]
    assert student["verified"] is False and student["problems"]
    assert Path(doc["files"]["csv"]).exists() and Path(doc["files"]["junit"]).exists()
    nothing = _lab(
        "grade", str(home / "missing"), "--assignment", files["assignment"], "--key", files["key"],
    )  # fmt: skip
    assert nothing.exit_code == EXIT_USAGE  # a path that does not exist


# --- completion and suggestions ------------------------------------------------------------


def test_shell_completion_offers_scenario_and_component_names(home: Path) -> None:
    env = {**os.environ, "_LAB_COMPLETE": "complete_bash"}

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        done = subprocess.run(
            [LAB],
            env={**env, "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout.split()

    assert complete("lab run up") == ["upstream-outage"]
    assert complete("lab scenarios login-") == ["login-flood", "login-race"]
    assert complete("lab selftest --only red") == ["redis-outage"]
    assert complete("lab logs gat") == ["gateway"]
    helped = _lab("--help")
    assert "--install-completion" in helped.stdout


def test_did_you_mean_finds_the_closest_name_or_nothing() -> None:
    assert did_you_mean("uptream-outage", ["upstream-outage", "order-race"]) == "upstream-outage"
    assert did_you_mean("zzz", ["upstream-outage", "order-race"]) is None


def test_a_sub_commands_json_error_names_group_and_command(home: Path) -> None:
    out = _lab("assignment", "new", "w1", "--scenario", "nope", "--json")
    assert out.exit_code == EXIT_USAGE
    assert json.loads(out.stdout)["command"] == "assignment new"


# --- every command keeps the contract (also the ones added later) ----------------------------

PRINTS_ITS_OWN_FORMAT = {"logs"}  # the services' JSON lines already


def _commands() -> dict[str, Any]:
    from typer.core import TyperGroup

    found: dict[str, Any] = {}
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            for sub, inner in command.commands.items():
                found[f"{name} {sub}"] = inner
        else:
            found[name] = command
    return found


def test_every_command_that_prints_has_json_and_is_documented() -> None:
    documented = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for name, command in _commands().items():
        if name in PRINTS_ITS_OWN_FORMAT:
            continue
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert "--json" in options, f"`lab {name}` has no --json"
        assert f"`lab {name}" in documented, f"docs/cli.md does not document `lab {name} --json`"


def _command_names(built: typer.Typer) -> set[str]:
    group = typer.main.get_command(built)
    assert isinstance(group, LabGroup)
    return set(group.commands)


def test_each_command_is_where_the_console_script_looks_for_it() -> None:
    """`lab WORD` imports only COMMAND_MODULE[WORD]: every command must be in that table,
    under the module that registers it, or the console script would not know it."""
    import lab

    assert set(lab.COMMAND_MODULE) == _command_names(app)
    for word, module in lab.COMMAND_MODULE.items():
        assert word in _command_names(lab.build_app([module])), (word, module)
    assert lab.modules_for(["up", "--runtime", "local"]) == ("scenarios.cli_platform",)
    for args in ([], ["--help"], ["no-such-command"], ["--install-completion"]):
        assert lab.modules_for(args) == lab.COMMAND_MODULES


def test_the_console_script_imports_only_the_command_it_runs() -> None:
    probe = (
        "import sys, lab; sys.argv = ['lab', 'status', '--help']\n"
        "try:\n    lab.main()\nexcept SystemExit:\n    pass\n"
        "print('scenarios.cli_drills' in sys.modules, 'scenarios.cli_platform' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip().splitlines()[-1] == "False True", done.stdout + done.stderr
