"""Parameter bounds in the scenario schema: a file's defaults must fit them, an override
outside them is refused before anything runs, with a message naming the bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from scenarios.schema import ScenarioError, available, load_scenario

MINIMAL = """\
name: {name}
title: A toy drill
description: One line.
parameters:
{params}
method:
  - {{type: action, action: sleep, seconds: "{{pause}}"}}
checks:
  - id: up
    title: up
    kind: promql
    query: up
    op: ">="
    value: 0
"""


def _write(tmp_path: Path, params: str, name: str = "toy") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(MINIMAL.format(name=name, params=params))
    return path


def test_every_shipped_parameter_has_bounds_and_help() -> None:
    for name, path in available().items():
        scenario = load_scenario(path)
        for key, spec in scenario.parameter_specs.items():
            bounded = spec.min is not None and spec.max is not None
            assert bounded or spec.choices, (name, key)
            assert spec.help, (name, key)


def test_an_override_within_bounds_is_used_with_the_defaults_type(tmp_path: Path) -> None:
    path = _write(tmp_path, "  pause: {default: 1, min: 0, max: 5, help: seconds}")
    scenario = load_scenario(path, {"pause": "3"})
    assert scenario.parameters == {"pause": 3}
    assert scenario.method[0].seconds == 3
    assert scenario.parameter_specs["pause"].bounds_text() == "0..5"


@pytest.mark.parametrize(
    ("value", "says"),
    [("6", "above the maximum 5"), ("-1", "below the minimum 0"), ("x", "expected an integer")],
)
def test_an_override_out_of_bounds_or_of_the_wrong_type_is_refused(
    tmp_path: Path, value: str, says: str
) -> None:
    path = _write(tmp_path, "  pause: {default: 1, min: 0, max: 5}")
    with pytest.raises(ScenarioError, match=says):
        load_scenario(path, {"pause": value})


def test_choices_bound_a_text_parameter(tmp_path: Path) -> None:
    params = "  pause: 1\n  asset: {default: BTC, choices: [BTC, ETH], help: what to buy}"
    path = _write(tmp_path, params)
    assert load_scenario(path, {"asset": "ETH"}).parameters["asset"] == "ETH"
    with pytest.raises(ScenarioError, match="not one of BTC, ETH"):
        load_scenario(path, {"asset": "DOGE"})
    assert load_scenario(path).parameter_specs["asset"].bounds_text() == "one of BTC, ETH"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ("  pause: {default: 9, min: 0, max: 5}", "parameters.pause: the default 9 is above"),
        ("  pause: {default: 1, min: 3, max: 2}", "min 3 is above max 2"),
        ("  pause: 1\n  who: {default: bob, min: 1}", "numeric parameters only"),
        ("  pause: {min: 0}", "parameters.pause.default"),
        ("  pause: {default: 1, maximum: 3}", "parameters.pause.maximum"),
        ("  pause: [1, 2]", "a scalar default or a mapping"),
    ],
)
def test_a_file_with_bad_bounds_is_one_error_naming_the_parameter(
    tmp_path: Path, params: str, says: str
) -> None:
    with pytest.raises(ScenarioError, match=says):
        load_scenario(_write(tmp_path, params))


def test_a_misspelt_parameter_suggests_the_right_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "  pause: {default: 1, min: 0, max: 5}")
    with pytest.raises(ScenarioError, match="did you mean 'pause'"):
        load_scenario(path, {"paws": "2"})


def test_parameter_specs_cannot_be_written_in_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "  pause: 1")
    path.write_text(path.read_text() + "parameter_specs: {}\n")
    with pytest.raises(ScenarioError, match="not a field"):
        load_scenario(path)
