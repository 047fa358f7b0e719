"""The mutant catalogue stays usable (fast, in the main suite): every mutant still applies to
the code as it is, still compiles, and names a drill and checks that exist. The drills
themselves run against the mutants under the marker ``mutants`` (test_mutants.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scenarios.schema import SCENARIO_DIR, load_scenario
from tests.mutants.catalogue import (
    ROOT,
    Mutant,
    MutantError,
    apply,
    load_catalogue,
    mutated_platform,
)

MUTANTS = load_catalogue()


def test_the_catalogue_has_at_least_fifteen_distinct_mutants() -> None:
    ids = [m.id for m in MUTANTS]
    assert len(ids) >= 15
    assert len(set(ids)) == len(ids), "duplicate mutant id"


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_mutant_applies_cleanly_and_still_compiles(mutant: Mutant, tmp_path: Path) -> None:
    originals = {e.file: (ROOT / e.file).read_text() for e in mutant.edits}
    platform = mutated_platform(mutant, tmp_path)
    for file, before in originals.items():
        after = (tmp_path / file).read_text()
        assert after != before, f"{mutant.id} changes nothing in {file}"
        ast.parse(after, filename=file)  # a mutant that does not parse proves nothing
        assert (ROOT / file).read_text() == before, "the original stays untouched"
    assert (platform / "cnop" / "__init__.py").exists()


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_mutant_names_a_drill_and_its_checks(mutant: Mutant) -> None:
    scenario = load_scenario(str(SCENARIO_DIR / f"{mutant.drill}.yaml"))
    ids = {c.id for c in scenario.checks}
    missing = [c for c in mutant.catches if c not in ids]
    assert not missing, f"{mutant.id}: {mutant.drill} has no check(s) {missing}"


def test_a_mutant_whose_search_text_is_gone_is_refused(tmp_path: Path) -> None:
    stale = MUTANTS[0].model_copy(deep=True)
    stale.edits[0].search = "this text is in no file of the platform"
    (tmp_path / stale.edits[0].file).parent.mkdir(parents=True)
    (tmp_path / stale.edits[0].file).write_text("x = 1\n")
    with pytest.raises(MutantError, match="0 times"):
        apply(stale, tmp_path)
