"""ZAP for real: `lab scan baseline --engine zap` against a local sandbox (ZAP on the host
network). Runs only where Docker answers and the ZAP image (ZAP_IMAGE) is present; CI machines
without a registry skip it, and `test_zap.py` covers the report conversion and the exact
`docker run` there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenarios.security import zap
from scenarios.security.target import ScanError
from tests.sandbox import Sandbox

pytestmark = [pytest.mark.zap, pytest.mark.e2e]


def _zap_here() -> str | None:
    try:
        zap.preflight()
    except ScanError as exc:
        return str(exc)
    return None


@pytest.mark.skipif(_zap_here() is not None, reason=_zap_here() or "")
def test_a_zap_baseline_of_the_hardened_platform_fails_nothing(
    security_sandbox: Sandbox, tmp_path: Path
) -> None:
    done = security_sandbox.lab(
        "scan", "baseline", "--engine", "zap", "--out", str(tmp_path), "--json", timeout=900
    )
    result = json.loads(done.stdout)["result"]
    assert (tmp_path / "zap" / zap.JSON_REPORT).is_file()
    assert (tmp_path / "zap" / zap.HTML_REPORT).is_file()
    loud = [f for f in result["findings"] if f["level"] in ("WARN", "FAIL")]
    assert not loud, json.dumps(loud, indent=2)
    assert done.returncode == 0, done.stderr
