"""Grading a security scan: one check per OWASP API Top 10 (2023) category.

A category passes when it holds no finding at WARN or above, so a report says "API1 broken"
rather than "37 alerts"; the categories the lab's flaws open weigh more than the others. Kept
apart from :mod:`grader.findings` because :mod:`grader.model` (which the checks come from) needs
the finding model itself.
"""

from __future__ import annotations

from grader.findings import OWASP_API_2023, UNMAPPED, Finding
from grader.model import CheckResult

__all__ = ["CATEGORY_POINTS", "category_checks"]

# Points per category: the ones the lab's flaws open weigh more than those nothing here tests.
CATEGORY_POINTS: dict[str, int] = {
    "API1:2023": 3,
    "API2:2023": 3,
    "API3:2023": 2,
    "API4:2023": 2,
    "API5:2023": 1,
    "API6:2023": 1,
    "API7:2023": 1,
    "API8:2023": 3,
    "API9:2023": 1,
    "API10:2023": 1,
    UNMAPPED: 1,
}


def category_checks(findings: list[Finding]) -> list[CheckResult]:
    """One graded check per category: passed when no finding in it is at WARN or above."""
    checks = []
    for key, points in CATEGORY_POINTS.items():
        name = OWASP_API_2023.get(key, "Weaknesses outside the API Top 10")
        counted = [f for f in findings if f.owasp == key and f.gated]
        shown = [f for f in findings if f.owasp == key and f.level != "IGNORE"]
        passed = not counted
        rules = sorted({f.rule for f in counted})
        checks.append(
            CheckResult(
                id=("owasp-" + key.split(":")[0].lower()) if key != UNMAPPED else "owasp-other",
                title=f"{key.split(':')[0] if key != UNMAPPED else 'Other'}: {name}",
                kind="scan",
                passed=passed,
                points=points if passed else 0,
                max_points=points,
                required=True,
                hint=(
                    ""
                    if passed
                    else f"{len(counted)} finding(s) at WARN or above ({', '.join(rules)}); "
                    "see the findings section for where and how to fix"
                ),
                evidence={
                    "observed": f"{len(counted)} at WARN or above, {len(shown)} shown",
                    "findings": [f"{f.level} {f.engine}:{f.rule} at {f.where}" for f in counted],
                    "flaws": sorted({f.flaw for f in counted if f.flaw}),
                },
            )
        )
    return checks
