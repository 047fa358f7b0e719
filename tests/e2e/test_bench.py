"""`lab bench` against a real sandbox: one run measures direct and gateway paths side by side,
switches a protection off and back, and writes its reports."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Sandbox


def test_bench_measures_direct_gateway_and_a_protection_off(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    done = sandbox.lab(
        "bench",
        "--seconds",
        "2",
        "--warmup",
        "1",
        "--connections",
        "4",
        "--route",
        "auth",
        "--protection",
        "limiter=off",
        "--json",
        "--out",
        str(tmp_path),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert [r["path"] for r in result["rows"]] == ["direct", "gateway", "gateway, limiter off"]
    assert result["tool"] in ("wrk", "python") and result["warmup_seconds"] == 1
    for row in result["rows"]:
        assert row["requests"] > 0, row
        assert row["non_2xx"] <= row["requests"] * 0.05, row
    assert result["rows"][0]["ratio"] == 1.0
    assert (tmp_path / "report.html").read_text().count("<rect") == 3
    assert json.loads((tmp_path / "bench.json").read_text())["route"] == "auth"
    # The gateway is back on its defaults: the sandbox records no override.
    state = json.loads((sandbox.home / "state.json").read_text())
    assert not state.get("overrides"), state.get("overrides")


def test_bench_refuses_an_unknown_protection_in_one_line(sandbox: Sandbox) -> None:
    done = sandbox.lab("bench", "--protection", "firewall=off")
    assert done.returncode == 2
    assert "limiter=off" in done.stdout + done.stderr
