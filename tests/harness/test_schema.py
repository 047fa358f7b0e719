"""Scenario files: every shipped drill loads; a broken one fails with one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from grader.model import InvariantCheck, TrafficCheck
from scenarios.schema import (
    ActionStep,
    Scenario,
    ScenarioError,
    TrafficStep,
    available,
    load_scenario,
    parse_overrides,
)

SHIPPED = available()
EXPECTED = {
    "upstream-outage",
    "slow-upstream",
    "login-flood",
    "login-race",
    "order-race",
    "lock-holder-pause",
    "redis-outage",
    "token-attacks",
}

MINIMAL = {
    "name": "tiny",
    "title": "Tiny",
    "description": "A tiny drill.",
    "parameters": {"rate": 5, "ratio": 0.5, "loud": False, "asset": "ETH"},
    "setup": {"accounts": [{"name": "alice", "deposit": 10}]},
    "method": [
        {
            "type": "traffic",
            "generator": "browse",
            "kind": "browse",
            "duration": 3,
            "params": {"account": "alice", "rate": "{rate}"},
        },
        {"type": "action", "action": "kill", "target": "inventory", "at": 1, "begin": "fault"},
        {"type": "action", "action": "start", "target": "inventory", "at": 2, "end": "fault"},
    ],
    "checks": [
        {
            "id": "avail",
            "title": "available {asset}",
            "kind": "traffic",
            "generator": "browse.balance",
            "metric": "availability",
            "window": "fault",
            "op": ">=",
            "value": "{ratio}",
            "guards": "x",
        }
    ],
    "weaken": {"gateway": {"CNOP_BREAKER_ENABLED": False}},
}


def write(tmp_path: Path, doc: object, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def test_every_drill_the_brief_asks_for_ships() -> None:
    assert set(SHIPPED) >= EXPECTED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_scenario_loads(name: str) -> None:
    scenario = load_scenario(SHIPPED[name])
    assert scenario.name == name
    assert "\n" not in scenario.description
    assert scenario.teaches.strip(), "a drill says what it teaches"
    assert scenario.weaken, "selftest needs settings that switch the protection off"
    assert scenario.guarded_checks, "selftest needs checks that guard the protection"
    assert any(isinstance(s, TrafficStep) for s in scenario.method)
    # Short enough for `lab drill` to stay around four minutes on a small machine. The longest,
    # breaker-rules, needs three open periods of CNOP_BREAKER_OPEN_SECONDS (10 s): a failed
    # trial, then an opening on the window a close emptied (min_calls), then the last close.
    assert scenario.planned_seconds <= 50


def test_parameters_are_substituted_with_their_types(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, MINIMAL), {"rate": "7", "asset": "BTC"})
    traffic = scenario.method[0]
    assert isinstance(traffic, TrafficStep)
    assert traffic.typed_params().rate == 7  # type: ignore[attr-defined]
    check = scenario.checks[0]
    assert isinstance(check, TrafficCheck)
    assert check.value == 0.5
    assert check.title == "available BTC"
    assert scenario.parameters == {"rate": 7, "ratio": 0.5, "loud": False, "asset": "BTC"}
    assert scenario.weaken == {"gateway": {"CNOP_BREAKER_ENABLED": "false"}}
    assert scenario.phase_names == ["drill", "fault"]


def test_bool_and_float_overrides(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, MINIMAL), {"loud": "yes", "ratio": "0.9"})
    assert scenario.parameters["loud"] is True
    assert scenario.parameters["ratio"] == 0.9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nope": "1"}, "tiny.yaml: unknown parameter 'nope' (known: asset, loud, rate, ratio)"),
        ({"rate": "fast"}, "--param rate: expected an integer, got 'fast'"),
        ({"ratio": "x"}, "--param ratio: expected a number, got 'x'"),
        ({"loud": "maybe"}, "--param loud: expected true or false, got 'maybe'"),
    ],
)
def test_bad_overrides_are_one_clear_line(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, MINIMAL), overrides)
    assert str(info.value) == message


def test_parse_overrides() -> None:
    assert parse_overrides(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(ScenarioError, match="expected KEY=VALUE"):
        parse_overrides(["novalue"])


def _broken(**changes: object) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for dotted, value in changes.items():
        node = doc
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_broken(method__0__params__rate=-1), "tiny.yaml: method[0 browse].params.rate:"),
        (_broken(method__0__kind="teleport"), "tiny.yaml: method[0 browse].kind:"),
        (_broken(method__1__action="explode"), "tiny.yaml: method[1 explode].action: Input"),
        (_broken(checks__0__op="~"), "tiny.yaml: checks[0 avail].op:"),
        (_broken(checks__0__generator="ghost"), "names unknown generator 'ghost'"),
        (_broken(checks__0__window="later"), "uses unknown window 'later'"),
        (_broken(method__0__params__account="bob"), "uses unknown account 'bob'"),
        (_broken(method__2__end="never"), "phase 'never' ends but never begins"),
        (_broken(description="two\nlines"), "description must be one line"),
        (_broken(name="other"), "name 'other' must match the file name"),
        (_broken(weaken={"mainframe": {}}), "unknown service 'mainframe'"),
        (_broken(surprise=1), "tiny.yaml: surprise: Extra inputs are not permitted"),
    ],
)
def test_validation_errors_name_file_and_field(tmp_path: Path, doc: dict, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, doc))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith("tiny.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, "name: tiny\nmethod: [\n  - oops: {\n"))
    assert str(info.value).startswith("tiny.yaml: line ")


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="a scenario is a YAML mapping"):
        load_scenario(write(tmp_path, "- just\n- a list\n"))


def test_missing_file() -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(Path("/nonexistent/ghost.yaml"))


def test_action_needs_a_target_and_faults_a_kind(tmp_path: Path) -> None:
    doc = _broken(method__1={"type": "action", "action": "kill", "at": 1})
    with pytest.raises(ScenarioError, match="action kill needs a target"):
        load_scenario(write(tmp_path, doc))
    doc = _broken(method__1={"type": "action", "action": "set_fault", "target": "order"})
    with pytest.raises(ScenarioError, match="set_fault needs a fault"):
        load_scenario(write(tmp_path, doc))


def test_paced_generators_need_a_bound(tmp_path: Path) -> None:
    doc = _broken()
    del doc["method"][0]["duration"]
    with pytest.raises(ScenarioError, match="needs a duration"):
        load_scenario(write(tmp_path, doc))


def test_value_from_is_accepted_on_invariants(tmp_path: Path) -> None:
    doc = _broken()
    doc["checks"].append(
        {
            "id": "no-dupes",
            "title": "no duplicates",
            "kind": "invariant",
            "account": "alice",
            "rule": "orders_completed",
            "op": "<=",
            "value_from": "browse.keys",
        }
    )
    scenario = load_scenario(write(tmp_path, doc))
    check = scenario.checks[1]
    assert isinstance(check, InvariantCheck) and check.value_from == "browse.keys"


def test_reconfigure_env_values_become_text() -> None:
    step = ActionStep.model_validate(
        {"type": "action", "action": "reconfigure", "target": "order", "env": {"A": 1, "B": True}}
    )
    assert step.env == {"A": "1", "B": "true"}


def test_scenario_model_round_trips() -> None:
    scenario = load_scenario(SHIPPED["upstream-outage"])
    again = Scenario.model_validate(scenario.model_dump(by_alias=True))
    assert again.checks == scenario.checks
