"""The ZAP engine: its report in ZAP's documented JSON layout becomes findings with the rules
file's levels, and the lab runs exactly the documented packaged scans. ZAP itself cannot run
here (no image); ``test_zap_live.py`` runs it where the image exists."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from grader.findings import by_category
from scenarios.security import zap
from scenarios.security.target import ScanError

DATA = Path(__file__).parent / "data"


def test_a_zap_json_report_becomes_findings_with_the_rules_files_levels() -> None:
    findings = {f.rule: f for f in zap.findings_from_report(DATA / "zap-report.json")}
    assert set(findings) == {"40040", "10021", "10096", "10049"}
    cors = findings["40040"]
    assert (cors.engine, cors.risk, cors.confidence, cors.level) == (
        "zap",
        "medium",
        "high",
        "FAIL",
    )
    assert (cors.cwe, cors.owasp) == (942, "API8:2023")
    assert (cors.method, cors.url) == ("GET", "http://gateway:8080/api/v1/balance")
    assert cors.instances == 2
    assert "access-control-allow-origin: https://YSsKwyfT.com" in cors.evidence
    assert cors.fix.startswith("If a web resource contains sensitive information")
    assert "<p>" not in cors.fix and "&#39;" not in findings["10021"].fix
    assert findings["10021"].level == "FAIL"  # the contract promises nosniff
    assert findings["10096"].level == "IGNORE"  # created_at is data
    assert findings["10049"].level == "INFO"


def test_a_rule_the_rules_file_does_not_list_is_a_warning_as_in_zaps_scripts(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "rules.tsv"
    rules.write_text("10021\tINFO\t(X-Content-Type-Options Header Missing)\tnot here\n")
    findings = {
        f.rule: f for f in zap.findings_from_report(DATA / "zap-report.json", zap.load_rules(rules))
    }
    assert findings["10021"].level == "INFO"
    assert findings["40040"].level == "WARN"


def test_zap_findings_group_by_owasp_category_without_the_ignored_ones() -> None:
    groups = by_category(zap.findings_from_report(DATA / "zap-report.json"))
    assert [f.rule for f in groups["API8:2023"]] == ["10021", "40040"]  # worst first, then by rule
    assert all(f.level != "IGNORE" for members in groups.values() for f in members)


def test_the_shipped_rules_file_is_in_zaps_format_with_a_reason_on_every_line() -> None:
    lines = [
        line
        for line in zap.RULES_FILE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for line in lines:
        plugin, level, name, reason = line.split("\t")
        assert plugin.isdigit() and level in ("IGNORE", "INFO", "WARN", "FAIL"), line
        assert name.startswith("(") and name.endswith(")") and reason.strip(), line
    assert len(zap.load_rules()) == len(lines)


def test_the_api_scan_is_zap_api_scan_on_the_openapi_document_with_a_bearer_replacer() -> None:
    spec = zap.zap_spec(
        "api",
        gateway="http://gateway:8080",
        token="tok.en.sig",
        network="cnop-lab-1_edge",
        wrk_dir=Path("/runs/scan/zap"),
        image="ghcr.io/zaproxy/zaproxy:stable",
    )
    assert spec.image == "ghcr.io/zaproxy/zaproxy:stable"
    assert spec.command[:8] == [
        "zap-api-scan.py",
        "-t",
        "http://gateway:8080/api/v1/openapi.json",
        "-f",
        "openapi",
        "-c",
        "zap-rules.tsv",
        "-J",
    ]
    assert spec.command[8:12] == ["zap-report.json", "-r", "zap-report.html", "-z"]
    # ZAP splits -z with shlex: the result must be ZAP's replacer settings, one -config each.
    assert shlex.split(spec.command[12]) == [
        "-config", "replacer.full_list(0).description=cnop-bearer",
        "-config", "replacer.full_list(0).enabled=true",
        "-config", "replacer.full_list(0).matchtype=REQ_HEADER",
        "-config", "replacer.full_list(0).matchstr=Authorization",
        "-config", "replacer.full_list(0).regex=false",
        "-config", "replacer.full_list(0).replacement=Bearer tok.en.sig",
    ]  # fmt: skip
    assert len(spec.command) == 13
    assert spec.run_kwargs() == {
        "networks": ["cnop-lab-1_edge"],
        "volumes": [("/runs/scan/zap", "/zap/wrk", "rw")],
        "envs": {},
        "remove": True,
    }


@pytest.mark.parametrize(
    ("profile", "script"), [("baseline", "zap-baseline.py"), ("full", "zap-full-scan.py")]
)
def test_baseline_and_full_spider_from_the_document_on_the_host_network(
    profile: str, script: str
) -> None:
    spec = zap.zap_spec(
        profile,
        gateway="http://127.0.0.1:8177",
        token="t",
        network="host",
        wrk_dir=Path("/w"),
        image="zap:local",
    )
    assert spec.command[:5] == [
        script,
        "-t",
        "http://127.0.0.1:8177/api/v1/openapi.json",
        "-m",
        "1",
    ]
    assert spec.command[5:11] == [
        "-c",
        "zap-rules.tsv",
        "-J",
        "zap-report.json",
        "-r",
        "zap-report.html",
    ]
    assert spec.run_kwargs()["networks"] == ["host"]


def test_zap_image_is_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZAP_IMAGE", raising=False)
    assert zap.zap_image() == "ghcr.io/zaproxy/zaproxy:stable"
    monkeypatch.setenv("ZAP_IMAGE", "registry.local/zap:2.16")
    assert zap.zap_image() == "registry.local/zap:2.16"


def test_without_the_image_zap_says_so_in_one_line_naming_the_offline_engine() -> None:
    with pytest.raises(ScanError) as caught:
        zap.preflight("cnop-lab-test/no-such-zap:never")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("ZAP cannot run: ")
    assert "`--engine schemathesis`" in message


def test_a_given_zap_report_is_graded_by_the_rules_file_without_running_zap(
    tmp_path: Path,
) -> None:
    """`lab scan --engine zap --report FILE`: a machine without Docker reads and grades a ZAP
    report as a ZAP run's own (labs/security/S1-reading-scans.md relies on it)."""
    from grader.scoring import category_checks
    from scenarios.security.scan import ScanOptions, _run_engine

    options = ScanOptions(engine="zap", zap_report=DATA / "zap-report.json")
    run = _run_engine(None, None, options, tmp_path)  # type: ignore[arg-type]  # ZAP never runs
    assert (tmp_path / "zap" / zap.JSON_REPORT).read_bytes() == (
        DATA / "zap-report.json"
    ).read_bytes()
    assert {f.rule: f.level for f in run.findings} == {
        "40040": "FAIL",
        "10021": "FAIL",
        "10096": "IGNORE",
        "10049": "INFO",
    }
    assert run.info["reports"] == [f"zap/{zap.JSON_REPORT}"] and run.notes
    checks = {c.id: c for c in category_checks(run.findings)}
    assert (checks["owasp-api8"].passed, checks["owasp-api8"].points) == (False, 0)
    assert all(c.passed for key, c in checks.items() if key != "owasp-api8")


def test_a_report_goes_with_the_zap_engine_only_and_must_exist(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lab import app

    runner = CliRunner()
    wrong = runner.invoke(
        app, ["scan", "--engine", "probe", "--report", str(DATA / "zap-report.json")]
    )
    assert wrong.exit_code == 2 and "goes with --engine zap" in wrong.output
    missing = runner.invoke(app, ["scan", "--engine", "zap", "--report", str(tmp_path / "no.json")])
    assert missing.exit_code == 2 and "no ZAP report at" in missing.output
