"""`lab scan` and `lab selftest --security` against a real platform.

The hardened platform scanned by schemathesis (and the probes) shows no finding at WARN or
above; with ``--flaw bola`` the same scan names bola and fails; the flaw is off again after the
scan; and the security selftest (every flaw of the catalogue found when on, none when off)
passes. Each scan is seeded and its engine's time budget bounded, so the module stays within a
few minutes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from grader.report import load_result
from tests.sandbox import LAB, Sandbox

pytestmark = [pytest.mark.e2e]


def _scan(box: Sandbox, out: Path, *args: str, timeout: float = 600) -> dict:
    done = box.lab(
        "scan", "api", "--seed", "7", "--out", str(out), "--json", *args, timeout=timeout
    )
    assert done.returncode in (0, 1), done.stderr
    envelope = json.loads(done.stdout)  # docs/cli.md: {"command", "exit_code", ..., "result"}
    assert envelope["command"] == "scan" and envelope["exit_code"] == done.returncode
    return {"code": done.returncode, "result": envelope["result"], "stderr": done.stderr}


def test_a_hardened_scan_with_schemathesis_finds_nothing_at_warn_or_above(
    security_sandbox: Sandbox, tmp_path: Path
) -> None:
    out = tmp_path / "hardened"
    run = _scan(security_sandbox, out, "--engine", "schemathesis", "--max-time", "90")
    result = run["result"]
    loud = [f for f in result["findings"] if f["level"] in ("WARN", "FAIL")]
    assert not loud, json.dumps(loud, indent=2)
    assert run["code"] == 0, run["stderr"]
    assert result["mode"] == "hardened" and result["flaws"] == []
    assert result["score"] == result["max_score"] > 0
    assert result["scan"]["engine"] == "schemathesis" and result["scan"]["test_cases"] > 0
    for name in ("result.json", "report.html", "report.md", "junit.xml"):
        assert (out / name).is_file(), name
    assert (out / "schemathesis" / "schemathesis.ndjson").stat().st_size > 0
    assert load_result(out).scan["engine"] == "schemathesis"  # result.json reads back


def test_a_scan_with_bola_on_names_it_and_switches_it_off_again(
    security_sandbox: Sandbox, tmp_path: Path
) -> None:
    run = _scan(
        security_sandbox, tmp_path / "bola", "--engine", "schemathesis", "--max-time", "30",
        "--flaw", "bola",
    )  # fmt: skip
    result = run["result"]
    assert run["code"] == 1
    assert result["flaws"] == ["bola"] and result["mode"] == "custom"
    bola = [f for f in result["findings"] if f["flaw"] == "bola"]
    assert bola, json.dumps(result["findings"], indent=2)
    assert bola[0]["owasp"] == "API1:2023" and bola[0]["level"] == "FAIL"
    assert bola[0]["cwe"] == 639 and "/api/v1/orders/" in bola[0]["url"]
    failed = {c["id"] for c in result["checks"] if not c["passed"]}
    assert "owasp-api1" in failed
    listing = security_sandbox.lab("flaws", "--json")
    assert listing.returncode == 0, listing.stderr
    assert not [f["name"] for f in json.loads(listing.stdout)["flaws"] if f["on"]]


def test_the_security_selftest_finds_every_flaw_and_nothing_on_the_hardened_platform(
    security_sandbox: Sandbox, tmp_path: Path
) -> None:
    # A long hardened scan is test_a_hardened_scan_with_schemathesis_finds_nothing...'s subject;
    # here the selftest's own (30 s of it) and every flaw switched on.
    done = security_sandbox.lab(
        "selftest", "--security", "--seed", "7", "--max-time", "30", "--out", str(tmp_path),
        timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "hardened" / "result.json").is_file()


def test_zap_without_docker_or_its_image_is_one_line_naming_the_offline_engine(
    security_sandbox: Sandbox, tmp_path: Path
) -> None:
    done = subprocess.run(
        [LAB, "scan", "api", "--engine", "zap", "--out", str(tmp_path)],
        env={**security_sandbox.env, "ZAP_IMAGE": "cnop-lab-test/no-such-zap:0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3  # docs/cli.md: could not run (Docker or the image missing)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lab: ZAP cannot run: "), done.stderr
    assert "`--engine schemathesis`" in lines[0]
    assert not (tmp_path / "result.json").exists()


def _wapiti_missing() -> str | None:
    from scenarios.security.target import ScanError
    from scenarios.security.wapiti import find_wapiti

    try:
        find_wapiti()
    except ScanError as exc:
        return str(exc)
    return None


@pytest.mark.skipif(_wapiti_missing() is not None, reason=_wapiti_missing() or "")
def test_a_hardened_wapiti_baseline_finds_nothing_at_warn_or_above(
    security_sandbox: Sandbox, tmp_path: Path
) -> None:
    done = security_sandbox.lab(
        "scan", "baseline", "--engine", "wapiti", "--max-time", "30", "--out", str(tmp_path),
        "--json", timeout=600,
    )  # fmt: skip
    result = json.loads(done.stdout)["result"]
    loud = [f for f in result["findings"] if f["level"] in ("WARN", "FAIL")]
    assert not loud, json.dumps(loud, indent=2)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "wapiti" / "wapiti.json").is_file()
    assert result["scan"]["version"].startswith("Wapiti 3.")


def test_a_scan_records_the_security_labs_hints_opened_before_it(
    security_sandbox: Sandbox, tmp_path: Path
) -> None:
    """A security lab's graded step is a scan, so the hints a student opened (`lab hint S2`)
    travel with it, as a drill's run carries its lab's (an assignment may charge for them)."""
    shown = security_sandbox.lab("hint", "S2")
    assert shown.returncode == 0, shown.stderr
    run = _scan(security_sandbox, tmp_path / "hinted", "--engine", "probe")
    hints = run["result"]["provenance"]["hints"]
    assert [(h["lab"], h["scenario"], h["hint"]) for h in hints] == [("S2", "scan", 1)]
