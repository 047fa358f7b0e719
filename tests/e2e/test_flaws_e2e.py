"""Every flaw of security/flaws.yaml switched on and off on a real sandbox (local runtime), seen
from outside with its probe; only the services a flaw concerns restart; `lab reset` closes all.

A sandbox of its own, started with `lab up --flaw bola`: switching flaws restarts services,
which the session's shared sandbox must not see. Each probe sends from its own loopback
address, since a closed trust-any-xff probe blocks its address for logins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from scenarios.flaw_probe import run_probe
from scenarios.flaws import load_flaws
from tests.sandbox import Sandbox, lab_sandbox, next_ip

FIRST_OFFSET = 23000
SWITCH_TIMEOUT_SECONDS = 300
FLAWS = load_flaws()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    home = tmp_path_factory.mktemp("flaws-home")
    with lab_sandbox(home, FIRST_OFFSET, up_args=("--flaw", "bola", "--timeout", "240")) as sandbox:
        yield sandbox


def state(box: Sandbox) -> dict[str, Any]:
    return json.loads((box.home / "state.json").read_text())


def pids(box: Sandbox) -> dict[str, int]:
    return {name: entry["pid"] for name, entry in state(box)["components"].items()}


def verdict(box: Sandbox, name: str) -> str:
    outcome = run_probe(FLAWS[name], box.gateway, local_address=next_ip())
    assert outcome.verdict != "unclear", outcome.as_dict()
    return outcome.verdict


def switch(box: Sandbox, on_or_off: str, name: str) -> str:
    done = box.lab("flaw", on_or_off, name, timeout=SWITCH_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lab_up_with_a_flaw_starts_with_it_open(box: Sandbox) -> None:
    assert sorted(state(box)["flaws"]) == ["bola"]
    assert verdict(box, "bola") == "open"
    listed = json.loads(box.lab("flaws", "--json").stdout)
    assert [f["name"] for f in listed if f["on"]] == ["bola"]


@pytest.mark.parametrize("name", list(FLAWS))
def test_a_flaw_switches_on_and_off_restarting_only_its_services(box: Sandbox, name: str) -> None:
    flaw = FLAWS[name]
    if name in state(box)["flaws"]:  # bola, from `lab up --flaw bola`
        switch(box, "off", name)
    assert state(box)["flaws"] == {}
    assert verdict(box, name) == "closed"

    before = pids(box)
    out = switch(box, "on", name)
    after = pids(box)
    restarted = {s for s in before if before[s] != after[s]}
    assert restarted == set(flaw.services), out
    assert sorted(state(box)["flaws"]) == [name]
    assert verdict(box, name) == "open"

    switch(box, "off", name)
    assert state(box)["flaws"] == {}
    assert verdict(box, name) == "closed"


def test_lab_reset_closes_every_flaw(box: Sandbox) -> None:
    opened = ["bola", "permissive-cors", "user-enumeration", "trust-any-xff"]
    done = box.lab("flaw", "on", *opened, timeout=SWITCH_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr
    assert sorted(state(box)["flaws"]) == sorted(opened)
    assert {name: verdict(box, name) for name in opened} == dict.fromkeys(opened, "open")

    reset = box.lab("reset", timeout=SWITCH_TIMEOUT_SECONDS)
    assert reset.returncode == 0, reset.stderr
    assert "flaws off: bola, permissive-cors, trust-any-xff, user-enumeration" in reset.stdout
    assert state(box)["flaws"] == {}
    assert {name: verdict(box, name) for name in opened} == dict.fromkeys(opened, "closed")
