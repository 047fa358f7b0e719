"""What a run records about itself, and how --student/--assignment are resolved."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from grader.assignments import AssignmentScenario, new_assignment, write_assignment
from scenarios.config import LabConfig
from scenarios.provenance import REDACTED, TagError, collect, run_tags, settings_in_force
from scenarios.schema import available, load_scenario


def runtime_with_state(tmp_path: Path, state: dict) -> SimpleNamespace:
    config = LabConfig(home=tmp_path / "lab", port_offset=0)
    config.state_file.parent.mkdir(parents=True, exist_ok=True)
    config.state_file.write_text(json.dumps(state))
    return SimpleNamespace(config=config)


def test_settings_in_force_name_overrides_and_hide_secrets(tmp_path: Path) -> None:
    runtime = runtime_with_state(
        tmp_path,
        {
            "service_env": {"CNOP_GEMINI_API_KEY": "sk-123", "CNOP_LOG_LEVEL": "DEBUG"},
            "overrides": {"gateway": {"CNOP_BREAKER_ENABLED": "false"}, "order": {}},
        },
    )
    settings = settings_in_force(runtime)  # type: ignore[arg-type]
    assert settings == {
        "all": {"CNOP_GEMINI_API_KEY": REDACTED, "CNOP_LOG_LEVEL": "DEBUG"},
        "gateway": {"CNOP_BREAKER_ENABLED": "false"},
    }


def test_provenance_names_the_scenario_file_host_and_version(tmp_path: Path) -> None:
    runtime = runtime_with_state(tmp_path, {"overrides": {}})
    scenario = load_scenario(available()["order-race"])
    found = collect(scenario, runtime)  # type: ignore[arg-type]
    assert found.scenario_file == "scenarios/order-race.yaml"
    assert found.scenario_sha256 and len(found.scenario_sha256) == 64
    assert found.host and found.os and found.lab_version
    assert found.settings == {} and found.student is None and found.assignment is None


def test_an_assignment_run_needs_a_student_and_an_assigned_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assignment, key = new_assignment("wk", [AssignmentScenario(name="order-race", sha256="0")])
    public, _ = write_assignment(assignment, key, tmp_path)
    monkeypatch.delenv("CNOP_STUDENT", raising=False)
    with pytest.raises(TagError, match="needs a student id"):
        run_tags(None, public, ["order-race"])
    with pytest.raises(TagError, match="does not ask for login-flood"):
        run_tags("s1", public, ["login-flood"])
    with pytest.raises(TagError, match="student id"):
        run_tags("../etc", public, ["order-race"])
    monkeypatch.setenv("CNOP_STUDENT", "s2")
    tags = run_tags(None, public, ["order-race"])
    assert tags.student == "s2" and tags.assignment == assignment
    assert tags.seal_key == bytes.fromhex(assignment.signing_key)
    assert run_tags(None, None, []).assignment is None
