"""The ZAP engine: OWASP ZAP's packaged scans in its Docker image (``ZAP_IMAGE``).

``baseline`` runs ``zap-baseline.py`` (spider + passive rules) on the API description's URL (the
gateway's ``/`` is a 404: nothing to spider there); ``api`` runs ``zap-api-scan.py -f openapi``
on the description, every request carrying the scan owner's bearer token through ZAP's replacer
rule (``-z "-config replacer.full_list(0)..."``); ``full`` runs ``zap-full-scan.py`` (spider and
every active rule) on the same URL. The container joins the sandbox's edge network on the Docker
runtime (the gateway is ``http://gateway:8080`` there) and the host's network on the local one.
ZAP writes its JSON (-J) and HTML (-r) reports into the run folder (mounted as ``/zap/wrk``) and
reads ``security/zap-rules.tsv`` (-c): ZAP's own IGNORE/INFO/WARN/FAIL levels per rule id, with
a reason on each line. :func:`findings_from_report` turns the JSON into findings with the
rules file's level, so the rules file decides what fails the grade.
"""

from __future__ import annotations

import html
import json
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.findings import Confidence, Finding, Level, Risk, finding_id, owasp_for_cwe
from scenarios.config import REPO_ROOT
from scenarios.security.target import API, ScanError

__all__ = [
    "DEFAULT_IMAGE",
    "RULES_FILE",
    "ZapSpec",
    "findings_from_report",
    "load_rules",
    "preflight",
    "run_zap",
    "zap_image",
    "zap_spec",
]

DEFAULT_IMAGE = "ghcr.io/zaproxy/zaproxy:stable"
RULES_FILE = REPO_ROOT / "security" / "zap-rules.tsv"
WRK = "/zap/wrk"
JSON_REPORT = "zap-report.json"
HTML_REPORT = "zap-report.html"
SCRIPTS = {"baseline": "zap-baseline.py", "api": "zap-api-scan.py", "full": "zap-full-scan.py"}
_RISKS: dict[str, Risk] = {"0": "info", "1": "low", "2": "medium", "3": "high"}
_CONFIDENCE: dict[str, Confidence] = {"1": "low", "2": "medium", "3": "high", "4": "confirmed"}
_TAGS = re.compile(r"<[^>]+>")
# ZAP rules that show one of the catalogue's flaws (security/flaws.yaml).
RULE_FLAW = {
    **dict.fromkeys(("10020", "10021", "10035", "10038"), "missing-headers"),
    **dict.fromkeys(("40040", "10098"), "permissive-cors"),
    **dict.fromkeys(("90022", "10023"), "verbose-errors"),
}


def zap_image() -> str:
    return os.environ.get("ZAP_IMAGE") or DEFAULT_IMAGE


@dataclass(frozen=True)
class ZapSpec:
    """One ``docker run`` of ZAP: what python-on-whales is called with."""

    image: str
    command: list[str]
    networks: list[str]
    volumes: list[tuple[str, str, str]]
    envs: dict[str, str] = field(default_factory=dict)

    def run_kwargs(self) -> dict[str, Any]:
        return {
            "networks": self.networks,
            "volumes": self.volumes,
            "envs": self.envs,
            "remove": True,
        }


def replacer_options(token: str) -> str:
    """ZAP's replacer rule that puts ``Authorization: Bearer TOKEN`` on every request, as one
    ``-z`` value (ZAP splits it with shlex, so each setting is quoted)."""
    rule = {
        "description": "cnop-bearer",
        "enabled": "true",
        "matchtype": "REQ_HEADER",
        "matchstr": "Authorization",
        "regex": "false",
        "replacement": f"Bearer {token}",
    }
    return " ".join(
        f"-config {shlex.quote(f'replacer.full_list(0).{key}={value}')}"
        for key, value in rule.items()
    )


def zap_spec(
    profile: str,
    *,
    gateway: str,
    token: str,
    network: str,
    wrk_dir: Path,
    image: str | None = None,
    minutes: int = 1,
) -> ZapSpec:
    """The exact ``docker run`` of one ZAP scan: ``gateway`` as ZAP reaches it (inside the
    sandbox's network or on the host), ``network`` a Docker network name or ``host``."""
    if profile not in SCRIPTS:
        raise ScanError(f"unknown ZAP profile {profile!r}; one of: {', '.join(SCRIPTS)}")
    document = f"{gateway.rstrip('/')}{API}/openapi.json"
    command = [SCRIPTS[profile], "-t", document]
    if profile == "api":
        command += ["-f", "openapi"]
    else:
        command += ["-m", str(minutes)]
    command += [
        "-c", RULES_FILE.name,
        "-J", JSON_REPORT,
        "-r", HTML_REPORT,
        "-z", replacer_options(token),
    ]  # fmt: skip
    return ZapSpec(
        image=image or zap_image(),
        command=command,
        networks=[network],
        volumes=[(str(wrk_dir), WRK, "rw")],
    )


def run_zap(
    spec: ZapSpec, wrk_dir: Path, rules_file: Path = RULES_FILE
) -> tuple[list[Finding], float]:
    """Run ZAP as ``spec`` says; ZAP's exit status (1 FAIL, 2 WARN) is not an error here, its
    JSON report is what counts. Raises :class:`ScanError` (one line) when Docker or the image is
    missing."""
    from python_on_whales import DockerException, docker

    preflight(spec.image)
    wrk_dir.mkdir(parents=True, exist_ok=True)
    wrk_dir.chmod(0o777)
    shutil.copyfile(rules_file, wrk_dir / rules_file.name)
    started = time.monotonic()
    try:
        output = docker.run(spec.image, spec.command, **spec.run_kwargs())
        (wrk_dir / "zap.log").write_text(str(output or ""), encoding="utf-8")
    except DockerException as exc:
        (wrk_dir / "zap.log").write_text(
            f"exit {exc.return_code}\n{exc.stdout or ''}\n{exc.stderr or ''}", encoding="utf-8"
        )
        if exc.return_code not in (1, 2):  # 1: a FAIL, 2: a WARN; anything else: no scan
            raise ScanError(f"ZAP failed (exit {exc.return_code}): {_first(exc)}") from exc
    report = wrk_dir / JSON_REPORT
    if not report.exists():
        raise ScanError("ZAP wrote no JSON report; see zap/zap.log in the run folder")
    return findings_from_report(report, load_rules(rules_file)), time.monotonic() - started


def preflight(image: str | None = None) -> None:
    """Raise :class:`ScanError` (one line naming the offline engine) unless Docker answers and
    the ZAP image is here; a scan never pulls it behind the user's back."""
    from python_on_whales import DockerException, docker

    image = image or zap_image()
    if shutil.which("docker") is None:
        raise ScanError(_missing("no docker command on this machine"))
    try:
        present = docker.image.exists(image)
    except DockerException as exc:
        raise ScanError(_missing(f"the Docker engine does not answer ({_first(exc)})")) from exc
    if not present:
        raise ScanError(_missing(f"the image {image} is not here (pull it, or set ZAP_IMAGE)"))


def _missing(why: str) -> str:
    return f"ZAP cannot run: {why}; `--engine schemathesis` scans offline"


def _first(exc: Exception) -> str:
    text = str(getattr(exc, "stderr", "") or exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# --- rules file and report -> findings ---------------------------------------------------


def load_rules(path: Path = RULES_FILE) -> dict[str, tuple[Level, str]]:
    """``plugin id -> (level, reason)`` from a ZAP rules file (tab separated: id, level, rule
    name, reason); the same format ``zap-baseline.py -c`` reads."""
    rules: dict[str, tuple[Level, str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3 or parts[1] not in ("IGNORE", "INFO", "WARN", "FAIL"):
            raise ScanError(f"{path.name}:{number}: want 'id<TAB>LEVEL<TAB>(name)<TAB>reason'")
        rules[parts[0]] = (parts[1], parts[3] if len(parts) > 3 else "")  # type: ignore[assignment]
    return rules


def _text(value: Any) -> str:
    return " ".join(html.unescape(_TAGS.sub(" ", str(value or ""))).split())


def findings_from_report(
    path: Path, rules: dict[str, tuple[Level, str]] | None = None
) -> list[Finding]:
    """Findings from ZAP's traditional JSON report (``-J``): one per alert and site, the first
    instance as where and evidence, the rest counted. A rule the rules file does not list is a
    WARN, as in ZAP's own scripts."""
    rules = rules if rules is not None else load_rules()
    data = json.loads(path.read_text(encoding="utf-8"))
    findings = []
    for site in data.get("site") or []:
        for alert in site.get("alerts") or []:
            plugin = str(alert.get("pluginid", ""))
            level, reason = rules.get(plugin, ("WARN", ""))
            instances = alert.get("instances") or [{}]
            first = instances[0]
            method = str(first.get("method") or "")
            url = str(first.get("uri") or site.get("@name") or "")
            cwe = int(alert["cweid"]) if str(alert.get("cweid", "")).lstrip("-").isdigit() else None
            cwe = cwe if cwe and cwe > 0 else None
            evidence = "; ".join(
                part
                for part in (
                    f"evidence: {first.get('evidence')}" if first.get("evidence") else "",
                    f"param: {first.get('param')}" if first.get("param") else "",
                    f"attack: {first.get('attack')}" if first.get("attack") else "",
                    _text(first.get("otherinfo") or alert.get("otherinfo")),
                    f"rules file: {reason}" if reason else "",
                )
                if part
            )
            findings.append(
                Finding(
                    id=finding_id("zap", plugin, method, url),
                    engine="zap",
                    rule=plugin,
                    title=str(alert.get("alert") or alert.get("name") or f"ZAP rule {plugin}"),
                    risk=_RISKS.get(str(alert.get("riskcode")), "info"),
                    confidence=_CONFIDENCE.get(str(alert.get("confidence")), "medium"),
                    level=level,
                    cwe=cwe,
                    owasp=owasp_for_cwe(cwe),
                    method=method,
                    url=url,
                    evidence=evidence[:2000],
                    fix=_text(alert.get("solution"))[:1000],
                    instances=max(1, len(instances), int(alert.get("count") or 1)),
                    flaw=RULE_FLAW.get(plugin) if level in ("WARN", "FAIL") else None,
                    details={
                        "description": _text(alert.get("desc"))[:1000],
                        "reference": _text(alert.get("reference"))[:500],
                    },
                )
            )
    return findings
