"""Challenge assignments and `lab config`, without a live platform: the hidden settings are
sealed in the assignment, opened only into the services' environment, ranked under the
student's fixes, and recorded in a run as a token."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from cnop.settings_check import check
from typer.testing import CliRunner

from grader.assignments import (
    AssignmentError,
    AssignmentScenario,
    challenge_key,
    load_assignment,
    load_key,
    new_assignment,
    open_challenge,
    signing_key,
    write_assignment,
)
from lab import app
from scenarios.cli_student import prepare_challenge
from scenarios.config import LabConfig
from scenarios.hints import find_lab, reveal
from scenarios.provenance import RunTags, assigned_settings, collect
from scenarios.runtime.base import RuntimeError_, service_layers
from scenarios.runtime.hidden import active_challenge, hidden_env, install_challenge
from scenarios.runtime.local import LocalRuntime
from scenarios.schema import available, load_scenario

HIDDEN = {"settings": {"gateway": {"CNOP_BREAKER_ENABLED": "false"}}}


def make_challenge(folder: Path):  # type: ignore[no-untyped-def]
    assignment, key = new_assignment(
        "ch", [AssignmentScenario(name="upstream-outage", sha256="0")], challenge=HIDDEN
    )
    public, private = write_assignment(assignment, key, folder)
    return assignment, key, public, private


def test_a_challenge_is_sealed_in_the_assignment_and_opens_only_with_its_key(
    tmp_path: Path,
) -> None:
    _, _, public, private = make_challenge(tmp_path)
    text = public.read_text()
    assert "BREAKER" not in text and "gateway" not in text
    loaded = load_assignment(public)
    assert open_challenge(loaded) == HIDDEN
    # The grader's derivation still holds: the challenge is not part of what derives the key.
    assert signing_key(loaded, load_key(private)) == bytes.fromhex(loaded.signing_key)
    data = json.loads(text)
    data["challenge"] = data["challenge"][:-8] + "AAAAAAA="
    public.write_text(json.dumps(data))
    with pytest.raises(AssignmentError, match="does not open"):
        open_challenge(load_assignment(public))
    plain, _ = new_assignment("plain", [AssignmentScenario(name="order-race", sha256="0")])
    assert plain.challenge is None and open_challenge(plain) == {}


def test_hidden_settings_sit_under_the_students_fix_and_a_drills_reconfiguration(
    tmp_path: Path,
) -> None:
    assignment, _, _, _ = make_challenge(tmp_path / "course")
    home = tmp_path / "lab"
    install_challenge(home, assignment.ref, assignment.challenge or "", challenge_key(assignment))
    assert "BREAKER" not in (home / "challenge.json").read_text()
    assert (home / "challenge_key").stat().st_mode & 0o777 == 0o600
    assert hidden_env(home, "gateway") == {"CNOP_BREAKER_ENABLED": "false"}
    assert hidden_env(home, "order") == {}
    state = {
        "config": {"gateway": {"CNOP_BREAKER_ENABLED": "true", "CNOP_RATE_LIMIT_ENABLED": "1"}},
        "overrides": {"gateway": {"CNOP_RATE_LIMIT_ENABLED": "false"}},
    }
    assert service_layers(home, state, "gateway") == {
        "CNOP_BREAKER_ENABLED": "true",  # the student's fix wins over the hidden setting
        "CNOP_RATE_LIMIT_ENABLED": "false",  # a drill's reconfiguration wins over both
    }
    assert service_layers(home, {}, "gateway") == {"CNOP_BREAKER_ENABLED": "false"}
    with pytest.raises(RuntimeError_, match="does not open"):
        install_challenge(home, assignment.ref, assignment.challenge or "", "A" * 43 + "=")


def test_a_challenge_run_needs_the_platform_started_with_that_challenge(tmp_path: Path) -> None:
    assignment, _, public, _ = make_challenge(tmp_path / "course")
    config = LabConfig(home=tmp_path / "lab", port_offset=0)
    runtime = SimpleNamespace(config=config, reconfigure_many=lambda *_: None)
    tags = RunTags(student="ada", assignment=assignment)
    with (
        pytest.raises(RuntimeError_, match="is a challenge: start the platform with"),
        assigned_settings(runtime, tags, print),  # type: ignore[arg-type]
    ):
        pass
    assert prepare_challenge(config, public) == "ch"
    with assigned_settings(runtime, tags, print):  # type: ignore[arg-type]
        pass
    assert prepare_challenge(config, None) is None  # a plain `lab up` clears it
    assert active_challenge(config.home) is None


def test_an_edited_challenge_stops_lab_up_in_one_line(tmp_path: Path) -> None:
    _, _, public, _ = make_challenge(tmp_path / "course")
    data = json.loads(public.read_text())
    data["challenge"] = "gAAAA" + data["challenge"][10:]
    public.write_text(json.dumps(data))
    with pytest.raises(typer.Exit) as stopped:
        prepare_challenge(LabConfig(home=tmp_path / "lab", port_offset=0), public)
    assert stopped.value.exit_code == 2
    assert active_challenge(tmp_path / "lab") is None


def test_a_run_records_the_challenge_token_hints_and_the_students_fix(tmp_path: Path) -> None:
    assignment, _, _, _ = make_challenge(tmp_path / "course")
    config = LabConfig(home=tmp_path / "lab", port_offset=0)
    install_challenge(
        config.home, assignment.ref, assignment.challenge or "", challenge_key(assignment)
    )
    config.state_file.write_text(
        json.dumps(
            {
                "runtime": "local",
                "service_env": {},
                "config": {"gateway": {"CNOP_BREAKER_ENABLED": "true"}},
                "overrides": {},
            }
        )
    )
    reveal(config.home, find_lab("01"))
    reveal(config.home, find_lab("04"))
    runtime = LocalRuntime(config)
    found = collect(load_scenario(available()["upstream-outage"]), runtime)
    assert found.challenge == {"assignment": assignment.ref, "token": assignment.challenge}
    assert [h["hint"] for h in found.hints] == [1]  # only this drill's lab
    assert found.settings == {"gateway": {"CNOP_BREAKER_ENABLED": "true"}}
    in_force = runtime.settings_in_force()
    assert in_force["challenge"] == {"hidden settings of": "ch"}  # named, never shown
    assert "false" not in json.dumps(in_force)


def test_the_services_own_settings_class_judges_names_and_values() -> None:
    assert check("gateway", {"CNOP_BREAKER_ENABLED": "true"}) == {}
    assert check("gateway", {"CNOP_TRUSTED_PROXIES": '["10.0.0.0/8"]'}) == {}
    assert check("insights", {"CNOP_GEMINI_API_KEY": "x"}) == {}  # an alias
    problems = check(
        "gateway",
        {
            "CNOP_BREAKR_ENABLED": "true",
            "CNOP_RATE_LIMIT_IP_LIMIT": "many",
            "CNOP_TRUSTED_PROXIES": "10.0.0.0/8",
        },
    )
    assert problems["CNOP_BREAKR_ENABLED"] == "not a setting of gateway"
    assert "integer" in problems["CNOP_RATE_LIMIT_IP_LIMIT"]
    assert "JSON" in problems["CNOP_TRUSTED_PROXIES"]
    assert "not a setting of order" in check("order", {"CNOP_BREAKER_ENABLED": "true"}).values()


def test_lab_config_set_refuses_what_it_cannot_apply_before_touching_the_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNOP_LAB_HOME", str(tmp_path / "lab"))
    runner = CliRunner()
    for args in (
        ["config", "set", "gatewy", "CNOP_BREAKER_ENABLED=true"],
        ["config", "set", "gateway", "BREAKER_ENABLED=true"],
        ["config", "set", "gateway", "CNOP_JWT_SECRET=" + "x" * 40],
        ["config", "set", "gateway", "CNOP_BREAKER_ENABLED=maybe"],
        ["config", "set", "order", "CNOP_BREAKER_ENABLED=true"],
    ):
        done = runner.invoke(app, args)
        assert done.exit_code == 2, (args, done.output)
    done = runner.invoke(app, ["config", "set", "gateway", "CNOP_BREAKER_ENABLED=true"])
    assert done.exit_code == 3 and "not running" in done.output


def test_assignment_new_hides_the_challenge_and_refuses_a_misspelt_setting(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "assignment",
            "new",
            "hidden",
            "--scenario",
            "upstream-outage",
            "--challenge",
            "gateway:CNOP_BREAKER_ENABLED=false",
            "--out",
            str(tmp_path),
        ],
    )
    assert made.exit_code == 0, made.output
    public = tmp_path / "hidden.assignment.json"
    assert "BREAKER" not in public.read_text()
    assert open_challenge(load_assignment(public)) == {**HIDDEN, "flaws": []}
    typo = runner.invoke(
        app,
        [
            "assignment",
            "new",
            "typo",
            "--scenario",
            "upstream-outage",
            "--challenge",
            "gateway:CNOP_BREAKR_ENABLED=false",
            "--out",
            str(tmp_path),
        ],
    )
    assert typo.exit_code == 2
    assert not (tmp_path / "typo.assignment.json").exists()


def test_a_challenge_hides_a_flaw_as_its_settings(tmp_path: Path) -> None:
    from scenarios.flaws import get_flaw

    flaw = get_flaw("alg-none")
    made = CliRunner().invoke(
        app,
        [
            "assignment",
            "new",
            "unsigned",
            "--scenario",
            "token-attacks",
            "--challenge",
            "alg-none",
            "--out",
            str(tmp_path),
        ],
    )
    assert made.exit_code == 0, made.output
    public = tmp_path / "unsigned.assignment.json"
    for env in flaw.env.values():
        assert not set(env) & set(public.read_text().split('"'))
    sealed = open_challenge(load_assignment(public))
    assert sealed == {"settings": flaw.env, "flaws": ["alg-none"]}
    home = tmp_path / "lab"
    loaded = load_assignment(public)
    install_challenge(home, loaded.ref, loaded.challenge or "", challenge_key(loaded))
    for service, env in flaw.env.items():
        assert hidden_env(home, service) == env
