"""The selftest's hardened-vs-weakened comparison: which checks flipped, and whether each did
what the selftest expects of it, on the index page (HTML and Markdown)."""

from __future__ import annotations

from pathlib import Path

from grader.compare import compare_selftest
from grader.model import RunResult
from grader.report import Expectation, render_index
from tests.grader.samples import sample_result


def _pair() -> tuple[RunResult, RunResult]:
    hardened = sample_result()
    checks = [c.model_copy(update={"passed": True}) for c in hardened.checks]
    hardened = hardened.model_copy(update={"checks": checks, "mode": "hardened"})
    # Weakened: the guarded breaker-opens flips; fast-fail (guarded) still passes; the
    # unguarded ledger flips too.
    flipped = {"breaker-opens": False, "fast-fail": True, "ledger": False}
    weak_checks = [c.model_copy(update={"passed": flipped.get(c.id, c.passed)}) for c in checks]
    weakened = hardened.model_copy(update={"checks": weak_checks, "mode": "weakened"})
    return hardened, weakened


def test_each_check_is_classified_by_what_switching_the_protection_off_did() -> None:
    hardened, weakened = _pair()
    comparison = compare_selftest([("toy", hardened, weakened)])
    rows = {row.id: row for row in comparison.rows("toy")}
    assert rows["breaker-opens"].outcome == "flipped" and rows["breaker-opens"].expected
    assert rows["fast-fail"].outcome == "held" and not rows["fast-fail"].expected
    assert rows["ledger"].outcome == "flipped" and rows["ledger"].expected  # unguarded: any
    assert comparison.flipped == 2 and comparison.unexpected == 1
    assert rows["fast-fail"].as_dict()["guards"] == "breaker"


def test_a_missing_weakened_run_is_not_run_not_a_flip() -> None:
    hardened, _ = _pair()
    comparison = compare_selftest([("toy", hardened, None)])
    guarded = [row for row in comparison.table if row.guards]
    assert guarded and all(r.outcome == "not-run" and not r.expected for r in guarded)


def test_the_selftest_index_page_shows_which_checks_flipped(tmp_path: Path) -> None:
    hardened, weakened = _pair()
    comparison = compare_selftest([("toy", hardened, weakened)])
    render_index(
        [(tmp_path / "toy-hardened", hardened), (tmp_path / "toy-weakened", weakened)],
        tmp_path,
        expectations=[Expectation("passes", True), Expectation("guarded fail", False)],
        comparison=comparison,
    )
    html = (tmp_path / "index.html").read_text()
    assert "Hardened vs weakened: which checks flipped" in html
    assert "2 of" in html and "flipped: pass → fail" in html
    section = html[html.index("hardened-vs-weakened") :]
    assert section.index("breaker-opens") < section.index("fast-fail")
    markdown = (tmp_path / "index.md").read_text()
    assert "| flipped |" in markdown and "| held | ❌ no |" in markdown


def test_a_drill_index_has_no_comparison(tmp_path: Path) -> None:
    hardened, _ = _pair()
    render_index([(tmp_path / "toy", hardened)], tmp_path)
    assert "which checks flipped" not in (tmp_path / "index.html").read_text()
