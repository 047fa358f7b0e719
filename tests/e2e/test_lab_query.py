"""`lab query` and `lab logs --event` against a real sandbox (a real Prometheus scraping it)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import LAB, Sandbox

pytestmark = pytest.mark.e2e


def _wait_for_series(sandbox: Sandbox, promql: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = sandbox.lab("query", promql)
        if out.returncode == 0 and "no series" not in out.stdout:
            return out.stdout
        if time.monotonic() > deadline:
            pytest.fail(f"{promql} never matched: {out.stdout} {out.stderr}")
        time.sleep(0.5)


def test_lab_query_prints_an_instant_vector_as_a_table(sandbox: Sandbox) -> None:
    text = _wait_for_series(sandbox, 'cnop_orders_total{result="rejected"}')
    # Known series exist at 0 before any order: the table has a row per order type.
    assert "market_buy" in text and "rejected" in text and "order_type" in text
    up = _wait_for_series(sandbox, "sum by (job) (up)")
    assert "gateway" in up and "prometheus" in up


def test_lab_query_json_and_range(sandbox: Sandbox) -> None:
    # Scraped up, whatever restarted the gateway just before (a fresh sandbox, other tests).
    _wait_for_series(sandbox, 'up{job="gateway"} == 1')
    out = sandbox.lab("query", 'up{job="gateway"}', "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["resultType"] == "vector" and data["result"][0]["value"][1] == 1
    ranged = sandbox.lab("query", 'up{job="gateway"}', "--range", "30s", "--json")
    assert json.loads(ranged.stdout)["resultType"] == "matrix"
    summary = sandbox.lab("query", 'up{job="gateway"}', "--range", "30s")
    assert summary.returncode == 0 and "points" in summary.stdout and "last" in summary.stdout


def test_bad_promql_is_one_line_and_exit_2(sandbox: Sandbox) -> None:
    out = sandbox.lab("query", "sum((")
    assert out.returncode == 2
    assert out.stderr.startswith("lab: ") and len(out.stderr.strip().splitlines()) == 1
    assert "parse error" in out.stderr


def test_no_prometheus_is_exit_3(sandbox: Sandbox, tmp_path: Path) -> None:
    env = {**sandbox.env, "CNOP_LAB_HOME": str(tmp_path)}
    out = subprocess.run(
        [LAB, "query", "up"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 3, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "not running" in out.stderr


def test_lab_logs_event_shows_only_that_event_of_this_sandbox(sandbox: Sandbox) -> None:
    out = sandbox.lab("logs", "order", "--event", "service_started", "-n", "50")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events and all(e["event"] == "service_started" for e in events)
    everything = sandbox.lab("logs", "order", "-n", "5000")
    assert "color_message" not in everything.stdout
