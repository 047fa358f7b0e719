"""A challenge on a real platform, as a student meets it: the assignment hides a switched-off
circuit breaker, the drill fails, the student finds it, `lab config set gateway
CNOP_BREAKER_ENABLED=true` restarts only the gateway, the drill passes, and the grade charges
the hint the student opened."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox import LAB, Sandbox, lab_sandbox

pytestmark = pytest.mark.e2e

BREAKER = "CNOP_BREAKER_ENABLED"
# upstream-outage's checks that read the breaker's own state, metrics and logs.
BREAKER_ON = {"breaker-opens", "open-transition-counted", "open-breaker-does-not-call"}
BREAKER_ON |= {"state-change-logged"}


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("course")
    made = subprocess.run(
        [
            LAB,
            "assignment",
            "new",
            "breaker-hunt",
            "--scenario",
            "upstream-outage",
            "--challenge",
            f"gateway:{BREAKER}=false",
            "--hint-cost",
            "1",
            "--out",
            str(folder),
        ],
        env={**os.environ, "CNOP_LAB_HOME": str(folder / "unused")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return folder


@pytest.fixture(scope="module")
def challenged(course: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    home = tmp_path_factory.mktemp("challenge-lab")
    assignment = str(course / "breaker-hunt.assignment.json")
    with lab_sandbox(home, 16000, up_args=("--assignment", assignment)) as box:
        yield box


def _pids(box: Sandbox) -> dict[str, int]:
    state = json.loads((box.home / "state.json").read_text())
    return {name: entry["pid"] for name, entry in state["components"].items()}


def _run(box: Sandbox, course: Path, out: Path) -> dict:
    ran = box.lab(
        "run",
        "upstream-outage",
        "--assignment",
        str(course / "breaker-hunt.assignment.json"),
        "--student",
        "ada",
        "--seed",
        "11",
        "--out",
        str(out),
        timeout=300,
    )
    assert ran.returncode in (0, 1), ran.stderr
    return json.loads((out / "result.json").read_text())


def test_hidden_breaker_fails_the_drill_until_the_student_fixes_it(
    challenged: Sandbox, course: Path, tmp_path: Path
) -> None:
    box = challenged
    # Hidden: in no file the lab writes in plain text, and not in `lab config show`.
    for name in ("state.json", "challenge.json"):
        assert BREAKER not in (box.home / name).read_text()
    shown = box.lab("config", "show")
    assert shown.returncode == 0 and BREAKER not in shown.stdout
    assert "challenge breaker-hunt is running" in shown.stdout

    hint = box.lab("hint", "01")
    assert hint.returncode == 0 and "Hint 1 (1 of 3)" in hint.stdout

    broken = _run(box, course, tmp_path / "before")
    assert not broken["passed"]
    guarded = [c for c in broken["checks"] if c.get("guards") == "circuit-breaker"]
    assert guarded and not any(c["passed"] for c in guarded), "the breaker was not off"
    assert {c["id"] for c in guarded} >= BREAKER_ON
    assert BREAKER not in json.dumps(broken["provenance"])  # recorded as a token only
    assert broken["provenance"]["challenge"]["assignment"]["name"] == "breaker-hunt"
    assert [h["hint"] for h in broken["provenance"]["hints"]] == [1]

    before = _pids(box)
    fixed = box.lab("config", "set", "gateway", f"{BREAKER}=true", timeout=180)
    assert fixed.returncode == 0, fixed.stderr
    after = _pids(box)
    assert after["gateway"] != before["gateway"]
    assert {k: v for k, v in after.items() if k != "gateway"} == {
        k: v for k, v in before.items() if k != "gateway"
    }, "only the gateway restarts"
    assert box.lab("reset", timeout=180).returncode == 0  # a reset keeps the student's fix
    shown = box.lab("config", "show", "gateway")
    assert f"{BREAKER}" in shown.stdout and "true" in shown.stdout

    passed = _run(box, course, tmp_path / "after")
    failed = {c["id"]: c["evidence"].get("comparison") for c in passed["checks"] if not c["passed"]}
    # The checks that see the breaker itself (not the timings around it) flip with the fix.
    assert not BREAKER_ON & set(failed), f"the fix did not hold: {failed}"
    assert passed["provenance"]["settings"] == {"gateway": {BREAKER: "true"}}

    bundle = tmp_path / "ada.zip"
    submitted = box.lab(
        "submit",
        str(tmp_path / "after"),
        "--assignment",
        str(course / "breaker-hunt.assignment.json"),
        "--out",
        str(bundle),
    )
    assert submitted.returncode == 0, submitted.stderr
    out = tmp_path / "gradebook"
    graded = box.lab(
        "grade",
        str(bundle),
        "--assignment",
        str(course / "breaker-hunt.assignment.json"),
        "--key",
        str(course / "breaker-hunt.key.json"),
        "--out",
        str(out),
    )
    assert graded.returncode == 0, graded.stderr
    results = json.loads((out / "results" / "ada" / "results.json").read_text())
    assert results["score"] == passed["score"] - 1  # one hint at 1 point
    assert "1 hint(s) revealed" in results["output"]
    assert "did not run under the challenge" not in results["output"]
    assert BREAKER in results["output"]  # the instructor sees the student's fix
    # Last, as the whole drill depends on the machine keeping its timings (a busy 2-core box
    # can miss the restart deadline of inventory, a different check from the breaker's).
    assert passed["passed"], f"after the fix: failed {failed}, errors {passed['errors']}"
