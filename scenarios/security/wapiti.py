"""The wapiti engine: an offline active scanner pointed at the API description.

Wapiti (PyPI ``wapiti3``) pins its own versions of httpx and friends, so it lives in a tool
virtualenv of its own, ``.lab/tools/wapiti`` (``scripts/install-wapiti.sh``, run by
``scripts/bootstrap.sh``), never in the lab's. It reads the gateway's OpenAPI document
(``--swagger``), sends every operation with the scan owner's bearer token (``-H``), runs the
profile's modules (``baseline``: the passive header and CSP checks; ``api``: those plus the
injection modules that apply to a JSON API; ``full``: wapiti's defaults) and writes a JSON
report, which :func:`findings_from_report` turns into findings. ``security/wapiti-rules.tsv``
sets the level of what wapiti reports where its own would be wrong for a JSON API (its advice
for browsers that render HTML), each with a reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.findings import Finding, Level, Risk, finding_id, level_for_risk, owasp_for_cwe
from scenarios.config import REPO_ROOT
from scenarios.security.target import ScanError, ScanTarget

__all__ = [
    "MODULES",
    "RULES_FILE",
    "WapitiRun",
    "command",
    "find_wapiti",
    "findings_from_report",
    "load_rules",
    "run_wapiti",
]

RULES_FILE = REPO_ROOT / "security" / "wapiti-rules.tsv"
REPORT = "wapiti.json"
TOOL_DIR = Path("tools") / "wapiti"
# Modules that need no outside endpoint (ssrf, log4shell and wapp call one; the lab is offline).
MODULES = {
    "baseline": "http_headers,csp,methods",
    "api": "http_headers,csp,methods,sql,exec,file,xss,crlf,redirect,permanentxss",
    "full": "http_headers,csp,methods,sql,exec,file,xss,crlf,redirect,permanentxss,timesql,xxe,"
    "ldap,upload,shellshock",
}
MAX_SCAN_S = {"baseline": 60, "api": 180, "full": 900}
# Wapiti's category names -> CWE (its JSON names the category, not the weakness).
CATEGORY_CWE = {
    "SQL Injection": 89,
    "Blind SQL Injection": 89,
    "Cross Site Scripting": 79,
    "Stored Cross Site Scripting": 79,
    "Reflected Cross Site Scripting": 79,
    "Command execution": 78,
    "Path Traversal": 22,
    "CRLF Injection": 93,
    "XML External Entity": 611,
    "Server Side Request Forgery": 918,
    "Open Redirect": 601,
    "LDAP Injection": 90,
    "Content Security Policy Configuration": 693,
    "HTTP Secure Headers": 693,
    "Clickjacking Protection": 1021,
    "MIME Type Confusion": 693,
    "Secure Flag cookie": 614,
    "HttpOnly Flag cookie": 1004,
    "Cross Site Request Forgery": 352,
    "Unencrypted Channels": 319,
    "Weak credentials": 521,
    "Backup file": 530,
    "Potentially dangerous file": 538,
    "Htaccess Bypass": 285,
    "HTTP Methods": 650,
    "Internal Server Error": 755,
    "Resource consumption": 400,
    "Fingerprint web technology": 200,
    "Fingerprint web application framework": 200,
    "Fingerprint web server": 200,
    "Information Disclosure - Full Path": 209,
    "Vulnerable software": 1104,
}
# Categories that show one of the catalogue's flaws (security/flaws.yaml).
CATEGORY_FLAW = {
    "HTTP Secure Headers": "missing-headers",
    "Clickjacking Protection": "missing-headers",
    "MIME Type Confusion": "missing-headers",
    "Content Security Policy Configuration": "missing-headers",
}
_LEVELS: dict[int, Risk] = {4: "high", 3: "high", 2: "medium", 1: "low", 0: "info"}


@dataclass
class WapitiRun:
    findings: list[Finding] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    version: str = ""
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def find_wapiti(home: Path | None = None) -> Path:
    """The wapiti command: ``$CNOP_LAB_WAPITI``, the tool virtualenv under the lab home (or the
    repository's ``.lab``), or one on PATH; :class:`ScanError` naming the installer otherwise."""
    explicit = os.environ.get("CNOP_LAB_WAPITI")
    candidates = [Path(explicit)] if explicit else []
    for base in (home, REPO_ROOT / ".lab"):
        if base is not None:
            candidates.append(Path(base) / TOOL_DIR / "bin" / "wapiti")
    on_path = shutil.which("wapiti")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ScanError(
        "wapiti is not installed: scripts/install-wapiti.sh puts it in .lab/tools/wapiti "
        "(or set CNOP_LAB_WAPITI); `--engine schemathesis` scans without it"
    )


def command(
    wapiti: Path,
    target: ScanTarget,
    profile: str,
    out_dir: Path,
    token: str,
    max_time_s: int | None = None,
) -> list[str]:
    """The wapiti command line of one scan."""
    budget = max_time_s or MAX_SCAN_S[profile]
    return [
        str(wapiti),
        "--url", f"{target.gateway}/",
        "--swagger", target.openapi_url,
        "--scope", "folder",
        "--module", MODULES[profile],
        "--header", f"Authorization: Bearer {token}",
        "--max-scan-time", str(budget),
        "--max-attack-time", str(max(20, budget // 4)),
        "--flush-session",
        "--store-session", str(out_dir / "session"),
        "--format", "json",
        "--output", str(out_dir / REPORT),
        "--verbose", "0",
    ]  # fmt: skip


def run_wapiti(
    target: ScanTarget,
    profile: str,
    out_dir: Path,
    *,
    home: Path | None = None,
    max_time_s: int | None = None,
) -> WapitiRun:
    wapiti = find_wapiti(home)
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    budget = (max_time_s or MAX_SCAN_S[profile]) + 180
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command line
            command(wapiti, target, profile, out_dir, target.owner.token, max_time_s),
            capture_output=True,
            text=True,
            timeout=budget,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ScanError(f"wapiti did not finish within {budget} s") from exc
    log = (done.stdout + done.stderr).replace(target.owner.token, "<token>")
    (out_dir / "wapiti.log").write_text(log, encoding="utf-8")
    report = out_dir / REPORT
    if not report.exists():
        tail = " ".join(log.strip().splitlines()[-2:])
        raise ScanError(f"wapiti wrote no report (exit {done.returncode}): {tail}")
    run = WapitiRun(
        findings=findings_from_report(report),
        reports=[REPORT, "wapiti.log"],
        duration_s=time.monotonic() - started,
    )
    run.version = _report_version(report)
    return run


def _report_version(path: Path) -> str:
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("infos", {}).get("version"))
    except (OSError, ValueError, AttributeError):
        return ""


# --- rules file and report -> findings ---------------------------------------------------


def load_rules(path: Path = RULES_FILE) -> list[tuple[str, re.Pattern[str], Level, str]]:
    """``(category, info regex, level, reason)`` rows; the first that matches a finding sets
    its level."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 4 or parts[2] not in ("IGNORE", "INFO", "WARN", "FAIL"):
            raise ScanError(f"{path.name}:{number}: want 'category<TAB>regex<TAB>LEVEL<TAB>why'")
        rows.append((parts[0], re.compile(parts[1]), parts[2], parts[3]))  # type: ignore[arg-type]
    return rows


def _level(
    rules: list[tuple[str, re.Pattern[str], Level, str]], category: str, info: str, risk: Risk
) -> tuple[Level, str]:
    for name, pattern, level, reason in rules:
        if name == category and pattern.search(info):
            return level, reason
    return level_for_risk(risk), ""


def findings_from_report(
    path: Path, rules: list[tuple[str, re.Pattern[str], Level, str]] | None = None
) -> list[Finding]:
    """Findings from wapiti's JSON report: its ``vulnerabilities`` and ``anomalies`` (one per
    category, method, path and parameter); ``additionals`` (fingerprints) as informational."""
    rules = rules if rules is not None else load_rules()
    data = json.loads(path.read_text(encoding="utf-8"))
    target = str(data.get("infos", {}).get("target", "")).rstrip("/")
    classifications: dict[str, Any] = data.get("classifications") or {}
    findings: dict[str, Finding] = {}
    for section, floor in (("vulnerabilities", None), ("anomalies", None), ("additionals", 0)):
        for category, items in (data.get(section) or {}).items():
            for item in items or []:
                method = str(item.get("method") or "GET")
                where = str(item.get("path") or "/")
                url = where if where.startswith("http") else f"{target}{where}"
                info = str(item.get("info") or "")
                level_num = int(item.get("level") or 0) if floor is None else floor
                risk = _LEVELS.get(level_num, "info")
                level, reason = _level(rules, category, info, risk)
                cwe = CATEGORY_CWE.get(category)
                rule = f"{category}: {item.get('parameter')}" if item.get("parameter") else category
                key = finding_id("wapiti", f"{category}|{info}", method, url)
                if key in findings:
                    findings[key].instances += 1
                    continue
                solution = str((classifications.get(category) or {}).get("sol") or "")
                findings[key] = Finding(
                    id=key,
                    engine="wapiti",
                    rule=rule,
                    title=f"{category}: {info}"[:200] if info else category,
                    risk=risk,
                    confidence="medium",
                    level=level,
                    cwe=cwe,
                    owasp=owasp_for_cwe(cwe),
                    method=method,
                    url=url,
                    evidence=(info + (f"; rules file: {reason}" if reason else ""))[:2000],
                    fix=" ".join(solution.split())[:1000],
                    flaw=CATEGORY_FLAW.get(category) if level in ("WARN", "FAIL") else None,
                    reproduce=str(item.get("curl_command") or ""),
                    details={"section": section, "module": item.get("module", "")},
                )
    return list(findings.values())
