"""One findings model for every engine: graded per OWASP API Top 10 (2023) category, rendered
in one report section grouped by category, and kept whole in result.json."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from grader.findings import Finding, by_category, finding_id, owasp_for_cwe
from grader.model import Phase, RunResult
from grader.report import load_result, render_run
from grader.scoring import CATEGORY_POINTS, category_checks


def _finding(rule: str, owasp: str, level: str, **extra: object) -> Finding:
    url = "http://127.0.0.1:8080/api/v1/orders/ord_1"
    return Finding(
        id=finding_id("probe", rule, "GET", url),
        engine="probe",
        rule=rule,
        title=f"{rule} <b>title</b>",
        risk="high" if level == "FAIL" else "low",
        level=level,  # type: ignore[arg-type]
        owasp=owasp,
        method="GET",
        url=url,
        evidence="200 <script>x</script>",
        fix="look objects up by owner",
        **extra,  # type: ignore[arg-type]
    )


def _result(findings: list[Finding]) -> RunResult:
    now = datetime.now(UTC)
    checks = category_checks(findings)
    return RunResult(
        scenario="scan-api-probe",
        title="Security scan",
        seed=1,
        params={},
        runtime="local",
        started_at=now,
        finished_at=now,
        duration_s=1.0,
        phases=[Phase(name="scan", start=now, end=now)],
        checks=checks,
        score=sum(c.points for c in checks),
        max_score=sum(c.max_points for c in checks),
        passed=all(c.passed for c in checks),
        findings=findings,
        scan={"engine": "probe", "profile": "api", "target": "http://x/api/v1/openapi.json"},
        flaws=["bola"],
    )


def test_a_category_fails_on_a_warning_and_passes_on_informational_findings() -> None:
    findings = [
        _finding("bola", "API1:2023", "FAIL", flaw="bola"),
        _finding("missing-headers", "API8:2023", "WARN"),
        _finding("timestamps", "API3:2023", "INFO"),
        _finding("cookies", "API8:2023", "IGNORE"),
    ]
    checks = {c.id: c for c in category_checks(findings)}
    assert not checks["owasp-api1"].passed and checks["owasp-api1"].points == 0
    assert checks["owasp-api1"].evidence["flaws"] == ["bola"]
    assert not checks["owasp-api8"].passed
    assert checks["owasp-api3"].passed and checks["owasp-api3"].points == 2
    total = sum(CATEGORY_POINTS.values())
    assert sum(c.max_points for c in checks.values()) == total
    assert sum(c.points for c in checks.values()) == total - 3 - 3


def test_findings_group_by_category_in_top_10_order_without_ignored_ones() -> None:
    groups = by_category(
        [
            _finding("headers", "API8:2023", "WARN"),
            _finding("bola", "API1:2023", "FAIL"),
            _finding("odd", "other", "INFO"),
            _finding("cookies", "API8:2023", "IGNORE"),
        ]
    )
    assert list(groups) == ["API1:2023", "API8:2023", "other"]
    assert [f.rule for f in groups["API8:2023"]] == ["headers"]


def test_weaknesses_map_to_their_api_top_10_category() -> None:
    assert owasp_for_cwe(639) == "API1:2023"
    assert owasp_for_cwe(347) == "API2:2023"
    assert owasp_for_cwe(213) == "API3:2023"
    assert owasp_for_cwe(770) == "API4:2023"
    assert owasp_for_cwe(942) == "API8:2023"
    assert owasp_for_cwe(None) == owasp_for_cwe(123456) == "other"


def test_a_scan_renders_the_run_folder_with_findings_grouped_by_category(tmp_path: Path) -> None:
    result = _result(
        [_finding("bola", "API1:2023", "FAIL", flaw="bola"), _finding("hdr", "API8:2023", "INFO")]
    )
    render_run(result, tmp_path)
    assert load_result(tmp_path) == result
    html = (tmp_path / "report.html").read_text()
    assert "Findings by OWASP API Security Top 10 (2023)" in html
    assert "API1: Broken Object Level Authorization" in html
    assert "API8: Security Misconfiguration" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>x" not in html
    md = (tmp_path / "report.md").read_text()
    assert "### API1: Broken Object Level Authorization (1, 1 at WARN or above)" in md
    assert "| FAIL | high (medium) | `probe:bola` |" in md
    assert "- Fix: look objects up by owner" in md
    suite = ET.parse(tmp_path / "junit.xml").getroot()  # noqa: S314 - our own file
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["owasp-api1: API1: Broken Object Level Authorization"]


def test_a_scan_without_findings_says_so() -> None:
    result = _result([])
    assert result.passed and result.score == result.max_score
