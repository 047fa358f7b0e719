"""The offline engines' reports, as they wrote them here, become findings.

- ``schemathesis.ndjson``: ``lab scan``'s schemathesis command line (its NDJSON event report)
  on ``GET /api/v1/inventory/assets`` and ``/orders`` with the ``no-limits`` flaw on; the
  events are kept verbatim, only passing scenarios beyond two were dropped.
- ``wapiti-missing-headers.json``: wapiti 3.2.3 (``http_headers,csp``) with ``missing-headers``
  on; ``wapiti-hardened.json``: ``http_headers,csp,methods`` on the hardened platform.
"""

from __future__ import annotations

from pathlib import Path

from scenarios.security import fuzz, wapiti

DATA = Path(__file__).parent / "data"


def test_a_schemathesis_failure_becomes_a_finding_with_its_request_to_reproduce() -> None:
    run = fuzz.findings_from_ndjson(DATA / "schemathesis.ndjson")
    assert run.version == "4.32.5"
    assert run.test_cases >= 3
    [finding] = run.findings
    assert (finding.engine, finding.rule) == ("schemathesis", "negative_data_rejection")
    assert (finding.method, finding.details["operation"]) == (
        "GET",
        "GET /api/v1/inventory/assets",
    )
    assert finding.url.endswith("/api/v1/inventory/assets?limit=251")
    assert finding.evidence.startswith("200 Schema-violating request accepted")
    assert (finding.owasp, finding.cwe, finding.level) == ("API8:2023", 20, "WARN")
    assert finding.reproduce.startswith("curl -i -X GET -H 'Authorization: Bearer $TOKEN'")
    assert "limit=251" in finding.reproduce
    assert finding.details["code"] == "ST201" and finding.details["phase"] == "coverage"


def test_wapiti_header_findings_name_the_missing_headers_flaw() -> None:
    findings = {
        f.rule: f for f in wapiti.findings_from_report(DATA / "wapiti-missing-headers.json")
    }
    assert set(findings) == {
        "Content Security Policy Configuration",
        "Clickjacking Protection",
        "MIME Type Confusion",
    }
    mime = findings["MIME Type Confusion"]
    assert (mime.engine, mime.risk, mime.level, mime.flaw) == (
        "wapiti",
        "low",
        "WARN",
        "missing-headers",
    )
    assert (mime.cwe, mime.owasp) == (693, "API8:2023")
    assert (mime.method, mime.url) == ("GET", "http://127.0.0.1:13221/")
    assert mime.title == "MIME Type Confusion: X-Content-Type-Options is not set"
    assert mime.fix and mime.reproduce.startswith("curl")


def test_wapiti_on_the_hardened_platform_reports_only_informational_findings() -> None:
    findings = wapiti.findings_from_report(DATA / "wapiti-hardened.json")
    assert findings and {f.rule for f in findings} == {"HTTP Methods"}
    assert {f.level for f in findings} == {"INFO"}
    assert not [f for f in findings if f.flaw]


def test_the_wapiti_rules_file_gives_a_reason_on_every_line() -> None:
    rows = wapiti.load_rules()
    assert rows and all(reason.strip() for *_, reason in rows)
