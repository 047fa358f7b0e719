"""Security findings: one model for every scanner, graded by OWASP API Security Top 10 (2023).

Every engine of ``lab scan`` (ZAP, schemathesis, wapiti, the lab's own probes) turns its report
into :class:`Finding` objects; nothing downstream knows which engine found what. A finding's
``level`` is the gate, in ZAP's own vocabulary: ``FAIL`` and ``WARN`` count against the grade,
``INFO`` is shown, ``IGNORE`` is kept in result.json only. A scan is graded with one check per
Top 10 category (:mod:`grader.scoring`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "GATE_LEVELS",
    "OWASP_API_2023",
    "Finding",
    "Level",
    "Risk",
    "by_category",
    "finding_id",
    "gated",
    "level_for_risk",
    "owasp_for_cwe",
]

OWASP_API_2023: dict[str, str] = {
    "API1:2023": "Broken Object Level Authorization",
    "API2:2023": "Broken Authentication",
    "API3:2023": "Broken Object Property Level Authorization",
    "API4:2023": "Unrestricted Resource Consumption",
    "API5:2023": "Broken Function Level Authorization",
    "API6:2023": "Unrestricted Access to Sensitive Business Flows",
    "API7:2023": "Server Side Request Forgery",
    "API8:2023": "Security Misconfiguration",
    "API9:2023": "Improper Inventory Management",
    "API10:2023": "Unsafe Consumption of APIs",
}
UNMAPPED = "other"  # a finding whose weakness the Top 10 does not name

Risk = Literal["high", "medium", "low", "info"]
Confidence = Literal["confirmed", "high", "medium", "low"]
Level = Literal["FAIL", "WARN", "INFO", "IGNORE"]
GATE_LEVELS: frozenset[str] = frozenset({"FAIL", "WARN"})

# CWE -> Top 10 category, for engines that only know the weakness (ZAP, wapiti). The most
# specific category wins; a CWE not listed goes to UNMAPPED and is still reported.
_CWE_CATEGORY: dict[int, str] = {
    **dict.fromkeys((284, 285, 639, 566, 863, 425), "API1:2023"),
    **dict.fromkeys(
        (287, 290, 294, 307, 345, 347, 384, 521, 613, 798, 1391, 204, 203), "API2:2023"
    ),
    **dict.fromkeys((200, 213, 359, 915, 497, 215), "API3:2023"),
    **dict.fromkeys((400, 770, 799, 1333, 405, 674), "API4:2023"),
    **dict.fromkeys((862, 269, 250), "API5:2023"),
    **dict.fromkeys((918,), "API7:2023"),
    **dict.fromkeys(
        (
            16,
            20,
            22,
            74,
            77,
            78,
            79,
            89,
            91,
            94,
            98,
            113,
            209,
            264,
            311,
            319,
            352,
            358,
            525,
            538,
            548,
            552,
            601,
            611,
            614,
            693,
            942,
            1004,
            1021,
            1275,
            388,
            755,
            90,
            943,
            116,
        ),
        "API8:2023",
    ),
    **dict.fromkeys((1059, 1104, 912), "API9:2023"),
}


def owasp_for_cwe(cwe: int | None) -> str:
    """The API Top 10 (2023) category of a weakness, or ``other``."""
    return _CWE_CATEGORY.get(cwe or -1, UNMAPPED)


def level_for_risk(risk: Risk) -> Level:
    """The gate level of an engine without a rules file: anything above informational counts."""
    return {"high": "FAIL", "medium": "FAIL", "low": "WARN", "info": "INFO"}[risk]  # type: ignore[return-value]


def finding_id(engine: str, rule: str, method: str, url: str) -> str:
    """Stable across runs of the same scan, so two reports can be compared finding by finding."""
    digest = hashlib.sha256(f"{engine}\n{rule}\n{method}\n{url}".encode()).hexdigest()[:10]
    return f"{engine}-{digest}"


class Finding(BaseModel):
    """One weakness at one place, as any engine reports it."""

    id: str
    engine: str  # zap, schemathesis, wapiti, probe
    rule: str  # the engine's rule: a ZAP plugin id, a schemathesis check, a probe name
    title: str
    risk: Risk
    confidence: Confidence = "medium"
    level: Level
    cwe: int | None = None
    owasp: str = UNMAPPED  # a key of OWASP_API_2023, or "other"
    method: str = ""
    url: str = ""
    evidence: str = ""  # what was seen (a header, a status, a body excerpt), short
    fix: str = ""
    # The catalogue flaw this finding demonstrates, when the rule is specific enough to say.
    flaw: str | None = None
    instances: int = Field(default=1, ge=1)
    reproduce: str = ""  # a curl line, where the engine gives one
    details: dict[str, Any] = {}

    @property
    def where(self) -> str:
        return f"{self.method} {self.url}".strip()

    @property
    def gated(self) -> bool:
        return self.level in GATE_LEVELS


def gated(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that count against the grade (WARN or FAIL)."""
    return [f for f in findings if f.gated]


def by_category(findings: Iterable[Finding]) -> dict[str, list[Finding]]:
    """Findings grouped by Top 10 category, in the list's order (API1..API10, then other);
    IGNOREd findings left out."""
    groups: dict[str, list[Finding]] = {}
    for key in [*OWASP_API_2023, UNMAPPED]:
        members = [f for f in findings if f.owasp == key and f.level != "IGNORE"]
        if members:
            groups[key] = sorted(members, key=lambda f: (_LEVEL_ORDER[f.level], f.rule, f.url))
    return groups


_LEVEL_ORDER = {"FAIL": 0, "WARN": 1, "INFO": 2, "IGNORE": 3}
