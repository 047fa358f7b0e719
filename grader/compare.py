"""Hardened against weakened: which checks a selftest's switched-off protection flipped.

`lab selftest` runs each drill twice; the index page is where an instructor or a student sees,
check by check, what switching the protection off changed. A check tagged ``guards`` must flip
from pass to fail (that is what proves it tests the protection); an untagged check that flips
is worth knowing too (the protection mattered beyond what it is tagged for), and a guarded check
that still passes is the selftest's failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from grader.model import RunResult

__all__ = ["CompareRow", "SelftestComparison", "compare_selftest"]

Outcome = Literal[
    "flipped",  # passed hardened, failed weakened
    "held",  # passed both times
    "failed-both",
    "failed-hardened",  # failed hardened, passed weakened
    "not-run",  # a run is missing or did not evaluate the check
]


@dataclass(frozen=True)
class CompareRow:
    scenario: str
    id: str
    title: str
    guards: str | None
    hardened: bool | None  # None: not evaluated in that run
    weakened: bool | None
    outcome: Outcome
    expected: bool  # what the selftest wants: guarded checks flip, others anything

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _outcome(hardened: bool | None, weakened: bool | None) -> Outcome:
    if hardened is None or weakened is None:
        return "not-run"
    if hardened and not weakened:
        return "flipped"
    if hardened and weakened:
        return "held"
    if not hardened and not weakened:
        return "failed-both"
    return "failed-hardened"


@dataclass(frozen=True)
class SelftestComparison:
    table: tuple[CompareRow, ...]

    def rows(self, scenario: str) -> list[CompareRow]:
        return [row for row in self.table if row.scenario == scenario]

    @property
    def flipped(self) -> int:
        return sum(1 for row in self.table if row.outcome == "flipped")

    @property
    def unexpected(self) -> int:
        return sum(1 for row in self.table if not row.expected)

    def view(self) -> dict[str, object]:
        """What the index templates render."""
        scenarios = list(dict.fromkeys(row.scenario for row in self.table))
        return {
            "scenarios": [{"name": name, "rows": self.rows(name)} for name in scenarios],
            "flipped": self.flipped,
            "unexpected": self.unexpected,
            "total": len(self.table),
        }


def compare_selftest(
    runs: Sequence[tuple[str, RunResult | None, RunResult | None]],
) -> SelftestComparison:
    """One row per check of each scenario: ``runs`` holds (scenario, hardened, weakened)."""
    table: list[CompareRow] = []
    for scenario, hardened, weakened in runs:
        before = {c.id: c for c in hardened.checks} if hardened else {}
        after = {c.id: c for c in weakened.checks} if weakened else {}
        for check_id in dict.fromkeys([*before, *after]):
            check = before.get(check_id) or after[check_id]
            h = before[check_id].passed if check_id in before else None
            w = after[check_id].passed if check_id in after else None
            outcome = _outcome(h, w)
            table.append(
                CompareRow(
                    scenario=scenario,
                    id=check_id,
                    title=check.title,
                    guards=check.guards,
                    hardened=h,
                    weakened=w,
                    outcome=outcome,
                    expected=outcome == "flipped" if check.guards else h is not False,
                )
            )
    return SelftestComparison(tuple(table))
