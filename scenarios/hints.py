"""The labs' hints as data (``labs/hints.yaml``), revealed one at a time and remembered.

One catalogue, several readers: ``lab hint`` shows them, a run records which ones its student
had opened (:func:`revealed` goes into the run's provenance, sealed with the rest of it), and
``lab grade`` charges an assignment's ``hint_cost`` for each. A lab's hints come in order and
end with its answer sketch, which counts as one more hint.

Reveals live in the sandbox's home (``hints.json``), not in ``state.json``: they outlast `lab
down`/`lab up`, as a hint once read cannot be unread. Deleting the file forgets them, which the
docs say plainly (like the rest of a run, this is tamper-evident at best).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from scenarios.config import REPO_ROOT

__all__ = [
    "HINTS_FILE",
    "SCAN_HINTS",
    "Hint",
    "HintError",
    "LabHints",
    "find_lab",
    "load_catalogue",
    "reveal",
    "revealed",
]

HINTS_FILE = REPO_ROOT / "labs" / "hints.yaml"
# The "scenario" of the security track's labs: their reveals are recorded in the next `lab scan`.
SCAN_HINTS = "scan"
REVEALS = "hints.json"


class HintError(Exception):
    """An unknown lab or hint number, or a broken catalogue; one line for the CLI."""


@dataclass(frozen=True)
class Hint:
    number: int  # 1-based; the answer sketch is the last
    title: str
    text: str


@dataclass(frozen=True)
class LabHints:
    lab: str  # "03", or "S2" for the security track's labs (labs/security/S2-*.md)
    scenario: str  # its drill, or "scan" for a security lab (its reveals go into `lab scan`)
    title: str
    hints: tuple[Hint, ...]


def load_catalogue(path: Path = HINTS_FILE) -> dict[str, LabHints]:
    """Every lab's hints by lab number (``03``) or security lab id (``S2``)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise HintError(f"{path}: not a readable hints catalogue ({exc})") from None
    labs: dict[str, LabHints] = {}
    for entry in (data or {}).get("labs") or []:
        try:
            texts = [str(t).strip() for t in entry["hints"]]
            hints = [Hint(i, f"Hint {i}", text) for i, text in enumerate(texts, 1)]
            if entry.get("answer"):
                hints.append(Hint(len(hints) + 1, "Answer sketch", str(entry["answer"]).strip()))
            lab = LabHints(
                lab=str(entry["lab"]).upper().zfill(2),
                scenario=str(entry["scenario"]),
                title=str(entry.get("title", "")),
                hints=tuple(hints),
            )
        except (KeyError, TypeError) as exc:
            raise HintError(f"{path}: an entry lacks {exc}") from None
        labs[lab.lab] = lab
    return labs


def find_lab(text: str, catalogue: dict[str, LabHints] | None = None) -> LabHints:
    """A lab by number (``3``, ``03``), by a security lab's id (``S2``, ``s2``) or by its
    drill's name (``login-flood``)."""
    labs = catalogue if catalogue is not None else load_catalogue()
    wanted = text.strip()
    if wanted.isdigit() and wanted.zfill(2) in labs:
        return labs[wanted.zfill(2)]
    if wanted.upper() in labs:
        return labs[wanted.upper()]
    for lab in labs.values():
        if lab.scenario == wanted:
            return lab
    known = ", ".join(f"{lab.lab} ({lab.scenario})" for lab in labs.values())
    raise HintError(f"no lab {text!r}; one of: {known}")


def _read(home: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((home / REVEALS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise HintError(f"{home / REVEALS} is unreadable ({exc}); remove it") from None
    reveals = data.get("revealed") if isinstance(data, dict) else None
    return [r for r in reveals or [] if isinstance(r, dict)]


def revealed(home: Path, scenario: str | None = None) -> list[dict[str, Any]]:
    """The reveals recorded in a sandbox (of one drill's lab), oldest first: ``lab``,
    ``scenario``, ``hint`` (its number), ``title``, ``revealed_at`` (ISO, UTC)."""
    return [r for r in _read(home) if scenario is None or r.get("scenario") == scenario]


def reveal(home: Path, lab: LabHints, number: int | None = None) -> tuple[Hint, bool]:
    """Hint ``number`` of ``lab`` (default: the first not yet revealed) and whether this is its
    first reveal (then it is recorded). Raises :class:`HintError` when every hint is out and
    no number was given, or for a number the lab does not have."""
    reveals = _read(home)
    seen = {int(r.get("hint", 0)) for r in reveals if r.get("lab") == lab.lab}
    if number is None:
        fresh = [h for h in lab.hints if h.number not in seen]
        if not fresh:
            raise HintError(
                f"every hint of lab {lab.lab} is revealed ({len(lab.hints)}); "
                f"`lab hint {lab.lab} N` shows one again"
            )
        hint = fresh[0]
    else:
        if not 1 <= number <= len(lab.hints):
            raise HintError(f"lab {lab.lab} has hints 1 to {len(lab.hints)}, not {number}")
        hint = lab.hints[number - 1]
    first = hint.number not in seen
    if first:
        reveals.append(
            {
                "lab": lab.lab,
                "scenario": lab.scenario,
                "hint": hint.number,
                "title": hint.title,
                "revealed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f"{REVEALS}.tmp"
        tmp.write_text(json.dumps({"revealed": reveals}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, home / REVEALS)
    return hint, first
