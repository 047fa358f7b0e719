"""The labs a student follows: every `lab ...` line in them parses with today's command line,
they need no tool the lab does not install (jq, watch), and no text cites a path outside the
repository (what a student must read lives in docs/ and labs/)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from lab import app

ROOT = Path(__file__).resolve().parents[2]
LABS = sorted([*(ROOT / "labs").glob("*.md"), *(ROOT / "labs" / "security").glob("*.md")])
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def _lab_commands(text: str) -> list[list[str]]:
    """Each `lab ...` command of the bash blocks, as the shell splits it (after `&&`, `;`, `|`
    too; comments dropped)."""
    commands = []
    for block in BLOCK.findall(text):
        for line in block.splitlines():
            if "lab " not in line:
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            segment: list[str] = []
            for token in [*lexer, ";"]:
                if token in ("&&", "||", "|", ";", "(", ")"):
                    if segment[:1] == ["lab"]:
                        commands.append(segment[1:])
                    segment = []
                else:
                    segment.append(token)
    return commands


def _parse(args: list[str]) -> None:
    """Parse like click would, without running anything."""
    group = typer.main.get_command(app)
    ctx = group.make_context("lab", list(args))
    rest = [*ctx._protected_args, *ctx.args]
    command = group
    name = "lab"
    while isinstance(command, TyperGroup):
        name, rest = rest[0], rest[1:]
        found = command.get_command(ctx, name)
        assert found is not None, f"no command {name!r}"
        command = found
    command.make_context(name, rest, parent=ctx)


@pytest.mark.parametrize("path", LABS, ids=lambda p: str(p.relative_to(ROOT / "labs")))
def test_every_lab_command_in_the_labs_parses(path: Path) -> None:
    commands = _lab_commands(path.read_text())
    assert commands
    for args in commands:
        try:
            _parse(args)
        except Exception as exc:
            pytest.fail(f"{path.name}: `lab {shlex.join(args)}`: {exc}")


def test_the_labs_use_lab_commands_not_jq_or_watch() -> None:
    for path in LABS:
        for block in BLOCK.findall(path.read_text()):
            words = set(re.findall(r"(?<![\w-])(jq|watch)(?=\s)", block))
            assert not words, f"{path.name} uses {words}: use `lab query --watch`, `lab logs -e`"


@pytest.mark.parametrize(
    "path",
    [*LABS, ROOT / "README.md", ROOT / "monitoring" / "rules.yml", *(ROOT / "docs").glob("*.md")],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_text_cites_a_path_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    for outside in ("/work/", "../shared", "shared/contract"):
        assert outside not in text, f"{path.relative_to(ROOT)} cites {outside}"


def _max_points(name: str) -> int:
    from scenarios.schema import SCENARIO_DIR, load_scenario

    return sum(c.points for c in load_scenario(SCENARIO_DIR / f"{name}.yaml").checks)


DRILL_LINE = re.compile(r"^Drill: `([a-z0-9-]+)`", re.MULTILINE)
DRILL_LABS = {p.name: m.group(1) for p in LABS if (m := DRILL_LINE.search(p.read_text()))}


@pytest.mark.parametrize("lab", sorted(DRILL_LABS))
def test_a_lab_states_its_drills_max_score(lab: str) -> None:
    """The score a lab announces is its drill's: a drill that gained checks updates its lab."""
    stated = re.search(r"Max\s+score\s+(\d+)\.", (ROOT / "labs" / lab).read_text())
    assert stated, f"{lab}: no 'Max score N.' in its introduction"
    assert int(stated.group(1)) == _max_points(DRILL_LABS[lab]), lab


def test_the_labs_readme_states_the_total_of_every_drill() -> None:
    from scenarios.schema import SCENARIO_DIR

    total = sum(_max_points(p.stem) for p in SCENARIO_DIR.glob("*.yaml"))
    text = (ROOT / "labs" / "README.md").read_text(encoding="utf-8")
    assert f"scores {total}/{total}" in text
