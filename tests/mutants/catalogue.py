"""The mutant catalogue (catalogue.yaml): loading it, and applying a mutant to a copy of the code.

A mutant is a search/replace on platform files rather than a unified diff: a diff's context goes
stale with every unrelated edit nearby, a search text only when the line it breaks changes, and
then the catalogue test says which mutant no longer applies.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = Path(__file__).with_name("catalogue.yaml")
SERVICES = ("gateway", "auth", "user", "order", "inventory", "insights")


class MutantError(Exception):
    """A mutant that cannot be applied to the code as it is now."""


class Edit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(pattern=r"^platform/cnop/[a-z0-9_/]+\.py$")
    search: str = Field(min_length=1)
    replace: str


class Mutant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,60}$")
    drill: str
    catches: list[str] = Field(min_length=1)
    why: str
    services: list[str] = Field(min_length=1)
    edits: list[Edit] = Field(min_length=1)
    # A mutant no drill catches yet: which check is missing. The test then expects it to
    # survive (xfail) instead of failing CI, and reports it as not caught.
    gap: str | None = None

    @model_validator(mode="after")
    def _services_cover_the_edits(self) -> Mutant:
        unknown = set(self.services) - set(SERVICES)
        if unknown:
            raise ValueError(f"{self.id}: unknown service(s) {sorted(unknown)}")
        for edit in self.edits:
            parts = edit.file.split("/")
            if parts[2] == "services" and parts[3] not in self.services:
                raise ValueError(f"{self.id}: edits {edit.file} but does not restart {parts[3]}")
        return self


def load_catalogue(path: Path = CATALOGUE) -> list[Mutant]:
    return [Mutant.model_validate(entry) for entry in yaml.safe_load(path.read_text())]


def apply(mutant: Mutant, root: Path) -> None:
    """Edit the files under ``root`` in place; every search text must occur exactly once."""
    for edit in mutant.edits:
        path = root / edit.file
        text = path.read_text()
        found = text.count(edit.search)
        if found != 1:
            raise MutantError(
                f"{mutant.id}: {edit.file} holds its search text {found} times (needs exactly 1)"
            )
        path.write_text(text.replace(edit.search, edit.replace))


def mutated_platform(mutant: Mutant, dest: Path, root: Path = ROOT) -> Path:
    """A copy of ``root``'s platform/ under ``dest`` with ``mutant`` applied; put the returned
    folder first on PYTHONPATH and ``import cnop`` finds the mutant."""
    shutil.copytree(
        root / "platform", dest / "platform", ignore=shutil.ignore_patterns("__pycache__")
    )
    apply(mutant, dest)
    return dest / "platform"
