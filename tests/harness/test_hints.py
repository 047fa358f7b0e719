"""The labs' hints as data: `lab hint` reveals them one at a time and remembers each reveal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab import app
from scenarios.hints import (
    SCAN_HINTS,
    HintError,
    find_lab,
    load_catalogue,
    reveal,
    revealed,
)
from scenarios.schema import available

LABS = Path(__file__).resolve().parents[2] / "labs"


def test_every_lab_has_its_hints_in_the_catalogue_and_none_left_in_its_markdown() -> None:
    catalogue = load_catalogue()
    pages = sorted(LABS.glob("[0-9][0-9]-*.md")) + sorted(LABS.glob("security/S[0-9]-*.md"))
    assert [p.name[:2] for p in pages] == sorted(catalogue)
    drills = set(available())
    for page in pages:
        lab = catalogue[page.name[:2]]
        if "\nDrill: `" in page.read_text():
            assert lab.scenario in drills and page.stem == f"{lab.lab}-{lab.scenario}"
        if page.parent.name == "security":
            assert lab.scenario == SCAN_HINTS, page.name  # a security lab's grade is a scan
        assert len(lab.hints) >= 3 and lab.hints[-1].title == "Answer sketch"
        assert all(h.text for h in lab.hints)
        text = page.read_text()
        hints_section = text.split("\n## Hints\n", 1)[1]
        assert "<details>" not in hints_section, page.name
        assert f"`lab hint {lab.lab}`" in hints_section, page.name


def test_hints_come_one_at_a_time_and_each_reveal_is_recorded_once(tmp_path: Path) -> None:
    lab = find_lab("3")
    assert find_lab("03") == lab == find_lab("login-flood")
    first, new = reveal(tmp_path, lab)
    assert (first.number, new) == (1, True)
    second, _ = reveal(tmp_path, lab)
    assert second.number == 2
    again, new = reveal(tmp_path, lab, 1)  # showing one again records nothing new
    assert (again, new) == (first, False)
    reveals = revealed(tmp_path, "login-flood")
    assert [r["hint"] for r in reveals] == [1, 2]
    assert all(re.match(r"\d{4}-\d\d-\d\dT", r["revealed_at"]) for r in reveals)
    assert revealed(tmp_path, "order-race") == []


def test_past_the_last_hint_or_an_unknown_lab_is_one_clear_error(tmp_path: Path) -> None:
    lab = find_lab("07")
    for _ in lab.hints:
        reveal(tmp_path, lab)
    with pytest.raises(HintError, match="every hint of lab 07 is revealed"):
        reveal(tmp_path, lab)
    with pytest.raises(HintError, match="has hints 1 to"):
        reveal(tmp_path, lab, len(lab.hints) + 1)
    with pytest.raises(HintError, match="no lab 'login-flod'"):
        find_lab("login-flod")


def test_lab_hint_prints_the_next_hint_and_records_it_in_the_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNOP_LAB_HOME", str(tmp_path / "lab"))
    runner = CliRunner()
    shown = runner.invoke(app, ["hint", "01"])
    assert shown.exit_code == 0, shown.output
    assert "Hint 1 (1 of 3)" in shown.output and "cnop_upstream_requests_total" in shown.output
    stored = json.loads((tmp_path / "lab" / "hints.json").read_text())["revealed"]
    assert [(r["lab"], r["hint"]) for r in stored] == [("01", 1)]
    wrong = runner.invoke(app, ["hint", "01", "9"])
    assert wrong.exit_code == 2


def test_a_security_lab_is_found_by_its_id_and_its_reveals_go_into_the_next_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = find_lab("S2")
    assert find_lab("s2") == lab and lab.scenario == SCAN_HINTS
    assert find_lab("2").lab == "02"  # the numeric labs keep their numbers
    monkeypatch.setenv("CNOP_LAB_HOME", str(tmp_path))
    shown = CliRunner().invoke(app, ["hint", "s2"])
    assert shown.exit_code == 0, shown.output
    said = " ".join(shown.output.split())  # rich wraps lines at the terminal's width
    assert "Hint 1 (1 of" in said and "your next `lab scan` records it" in said
    assert "next: `lab hint S2`" in said
    assert [(r["lab"], r["scenario"], r["hint"]) for r in revealed(tmp_path, SCAN_HINTS)] == [
        ("S2", "scan", 1)
    ]
