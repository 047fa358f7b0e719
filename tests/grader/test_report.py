"""Reports: result.json round trip, junit.xml, a self-contained report.html, Markdown, index."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from grader.model import Chart, RunResult
from grader.report import Expectation, junit_xml, load_result, render_index, render_run
from tests.grader.samples import sample_result

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.I)


def test_render_run_writes_all_files_and_round_trips(tmp_path: Path) -> None:
    result = sample_result()
    render_run(result, tmp_path)
    for name in ("result.json", "report.html", "report.md", "junit.xml"):
        assert (tmp_path / name).stat().st_size > 0
    assert load_result(tmp_path) == result
    assert load_result(tmp_path / "result.json") == result
    assert not list(tmp_path.glob("*.tmp"))


def test_junit_counts_failures_and_escapes(tmp_path: Path) -> None:
    render_run(sample_result(), tmp_path)
    suite = ET.parse(tmp_path / "junit.xml").getroot()  # noqa: S314 - our own file
    assert suite.tag == "testsuite" and suite.get("name") == "breaker-order-outage"
    assert suite.get("tests") == "4" and suite.get("failures") == "2"
    cases = suite.findall("testcase")
    assert len(cases) == 4
    failures = [c.find("failure") for c in cases if c.find("failure") is not None]
    assert len(failures) == 2
    fast_fail = failures[0]
    assert fast_fail.get("message").startswith("An open breaker must answer 503")
    assert "<script>alert('x')</script> & ]]>" in fast_fail.text  # escaped, and back intact
    assert failures[1].get("type") == "error"
    assert "rollback" in suite.find("system-err").text
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["seed"] == "4242" and props["score"] == "5/8"


def test_junit_for_a_passing_run() -> None:
    result = sample_result()
    for check in result.checks:
        check.passed = True
    suite = ET.fromstring(junit_xml(result).split("\n", 1)[1])  # noqa: S314
    assert suite.get("failures") == "0" and suite.find(".//failure") is None


def test_html_is_self_contained_and_shows_the_verdict(tmp_path: Path) -> None:
    render_run(sample_result(), tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "FAIL" in html and "5 / 8" in html and "4242" in html
    assert html.count('<svg class="chart"') == 2
    assert '<rect class="phase"' in html  # shaded phases
    assert "time since the drill started (s)" in html
    assert not EXTERNAL.findall(html), EXTERNAL.findall(html)
    assert "@import" not in html and "url(" not in html
    # Evidence is escaped, never executed.
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    # Hints only for failed checks.
    assert "An open breaker must answer 503" in html
    assert "Is CNOP_BREAKER_ENABLED true?" not in html
    assert "<details>" in html


def test_markdown_has_the_same_content(tmp_path: Path) -> None:
    render_run(sample_result(), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# ❌ FAIL · Order service outage")
    assert "score 5 / 8" in md and "| ✅ PASS | The breaker opens" in md
    assert "> **Hint:** An open breaker must answer 503" in md
    assert "Is CNOP_BREAKER_ENABLED true?" not in md
    assert "| 503 breaker open |" in md  # chart summary table
    assert "rollback: fault flag" in md


def test_reports_show_which_address_played_each_client(tmp_path: Path) -> None:
    result = sample_result()
    result.client_addresses = {"127.0.0.2": "172.31.254.128", "127.0.3.1": "172.31.254.129"}
    render_run(result, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| 127.0.3.1 | `172.31.254.129` |" in md
    html = (tmp_path / "report.html").read_text()
    assert "Client addresses" in html and "172.31.254.129" in html
    assert load_result(tmp_path).client_addresses == result.client_addresses


def test_empty_chart_says_no_data(tmp_path: Path) -> None:
    result = sample_result()
    result.charts.append(Chart(title="Nothing scraped", series={}, shaded=["fault"]))
    render_run(result, tmp_path)
    assert "no data" in (tmp_path / "report.html").read_text()
    assert "No data." in (tmp_path / "report.md").read_text()


def test_index_links_every_run(tmp_path: Path) -> None:
    failed = sample_result()
    passed: RunResult = failed.model_copy(
        update={
            "scenario": "login-bruteforce",
            "title": "Brute force",
            "passed": True,
            "score": 4,
            "max_score": 4,
        }
    )
    runs = []
    for result in (failed, passed):
        run_dir = tmp_path / "runs" / result.scenario
        render_run(result, run_dir)
        runs.append((run_dir, result))
    render_index(runs, tmp_path)
    html = (tmp_path / "index.html").read_text()
    assert 'href="runs/breaker-order-outage/report.html"' in html
    assert 'href="runs/login-bruteforce/report.html"' in html
    assert "1 of 2" in html and "9 / 12" in html and ">FAIL<" in html
    assert not EXTERNAL.findall(html)
    md = (tmp_path / "index.md").read_text()
    assert "[report](runs/login-bruteforce/report.md)" in md


def test_a_custom_run_says_weakened_custom_and_lists_its_settings(tmp_path: Path) -> None:
    result = sample_result().model_copy(
        update={"mode": "custom", "settings": {"gateway": {"CNOP_BREAKER_ENABLED": "false"}}}
    )
    render_run(result, tmp_path)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    for text in (md, html):
        assert "weakened (custom)" in text and "CNOP_BREAKER_ENABLED=false" in text
    assert "hardened" not in md
    assert load_result(tmp_path).mode_label == "weakened (custom)"


def test_selftest_index_shows_the_selftest_verdict_not_the_runs(tmp_path: Path) -> None:
    """A weakened run is meant to fail: the selftest passed, so its index must say PASS."""
    weakened = sample_result().model_copy(update={"mode": "weakened", "passed": False})
    hardened = sample_result().model_copy(update={"passed": True, "score": 12})
    runs = []
    for name, result in (("hardened", hardened), ("weakened", weakened)):
        render_run(result, tmp_path / name)
        runs.append((tmp_path / name, result))
    expectations = [
        Expectation("every required check passes", True),
        Expectation("its guarded checks fail", True),
    ]
    render_index(runs, tmp_path, expectations=expectations)
    html = (tmp_path / "index.html").read_text()
    md = (tmp_path / "index.md").read_text()
    assert "Selftest" in html and "2 of 2 as expected" in html
    assert '<div class="verdict pass"' in html
    assert md.startswith("# ✅ PASS · CNOP Lab selftest")
    render_index(runs, tmp_path, expectations=[expectations[0], Expectation("x", False)])
    assert (tmp_path / "index.md").read_text().startswith("# ❌ FAIL")
