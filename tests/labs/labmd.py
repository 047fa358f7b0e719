"""A lab's command blocks and the promises written next to them, for tests/labs.

Every ```bash block of a lab is followed by an ``<!-- expect ... -->`` comment (invisible in
rendered Markdown) with one line per command of the block (numbered from 1: a command is a
non-comment line, ``\\``-continuations joined):

    N: drill                      this command runs the lab's drill (must pass)
    N: skip: REASON               not run by the test, and why (a browser, a restart, ...)
    N: CLAUSE; CLAUSE...          run it and check every clause
    block: CLAUSE...              run the whole block as one script (loops)
    all: skip: REASON             skip every command of the block

Clauses on a ``lab query`` (run with ``--json``; a ``{k="v",...}`` selector keeps the series
whose labels include those, default all):

    value{sel} OP N               instant query: the sum of the selected series' values
    series{sel} OP N              how many series are selected
    min|max{sel} OP N             with --range: over every point of the selected series
    first|last{sel} OP N          with --range: the sum of each selected series' first/last point

A query must promise a value (a value/min/max/first/last clause with a bound above zero), so
no lab gives a query whose answer may be only zeros. Clauses on any other command, on its
standard output: ``lines OP N``, ``number OP N`` (the output read as one number),
``contains "TEXT"``, ``!contains "TEXT"`` (or in single quotes: ``contains '"a": 1'``).
Every command must exit 0 unless ``exit N`` says otherwise. OP is one of ``>= > <= < ==``.
"""

from __future__ import annotations

import json
import math
import operator
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": lambda a, b: math.isclose(a, b, abs_tol=1e-9),
}
_FENCE = re.compile(r"^[ \t]*```bash\n(.*?)^[ \t]*```\n", re.MULTILINE | re.DOTALL)
_EXPECT = re.compile(r"[ \t\n]*<!-- expect\n(.*?)-->", re.DOTALL)
_VALUE = re.compile(
    r"^(value|series|min|max|first|last)(\{[^}]*\})?\s*(>=|<=|==|>|<)\s*(-?[0-9.]+)$"
)
_TEXT = re.compile(r"""^(!?)contains\s+(["'])(.*)\2$""")
_COUNT = re.compile(r"^(lines|number|exit)\s*(>=|<=|==|>|<)?\s*(-?[0-9.]+)$")
_LABEL = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


class LabFormatError(Exception):
    """A block without promises, or promises the test cannot read."""


@dataclass
class Command:
    text: str
    number: int  # within its block, from 1
    line: int  # in the lab file
    action: str = "run"  # run, drill, skip
    reason: str = ""
    clauses: list[str] = field(default_factory=list)

    @property
    def is_query(self) -> bool:
        words = self.words()
        return words[:2] == ["lab", "query"]

    def words(self) -> list[str]:
        try:
            return shlex.split(self.text, comments=True)
        except ValueError:
            return []

    def where(self) -> str:
        return f"line {self.line} `{self.text[:90]}`"


@dataclass
class Block:
    line: int
    script: str
    commands: list[Command]
    whole: list[str] | None = None  # clauses for the block run as one script


def commands_of(script: str, first_line: int) -> list[Command]:
    out: list[Command] = []
    pending: list[str] = []
    start = first_line
    for offset, raw in enumerate(script.splitlines()):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = first_line + offset
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].rstrip())
            continue
        pending.append(stripped)
        out.append(Command(" ".join(pending), len(out) + 1, start))
        pending = []
    if pending:
        out.append(Command(" ".join(pending), len(out) + 1, start))
    return out


def parse_lab(path: Path) -> list[Block]:
    """Every bash block with its promises; raises :class:`LabFormatError` on a block without
    an expect comment, a command without a promise or a clause the test cannot read."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for fence in _FENCE.finditer(text):
        line = text.count("\n", 0, fence.start()) + 1
        script = fence.group(1)
        commands = commands_of(script, line + 1)
        expect = _EXPECT.match(text, fence.end())
        where = f"{path.name}:{line}"
        if expect is None:
            raise LabFormatError(f"{where}: a bash block without an `<!-- expect` comment after it")
        block = Block(line, script, commands)
        for entry in expect.group(1).strip().splitlines():
            _apply(block, entry.strip(), where)
        for command in commands:
            if command.action == "run" and not command.clauses and block.whole is None:
                raise LabFormatError(f"{where}: no promise for command {command.number}")
            if (
                command.action == "run"
                and command.is_query
                and block.whole is None
                and not any(_promises_value(c) for c in command.clauses)
            ):
                raise LabFormatError(
                    f"{where}: command {command.number} is a query with no promise of a "
                    "value above zero"
                )
            for clause in command.clauses:
                _check_clause(clause, command.is_query, where)
        for clause in block.whole or []:
            _check_clause(clause, False, where)
        blocks.append(block)
    return blocks


def _apply(block: Block, entry: str, where: str) -> None:
    key, sep, rest = entry.partition(":")
    rest = rest.strip()
    if not sep:
        raise LabFormatError(f"{where}: expect line {entry!r} has no `N:`")
    if key == "block":
        block.whole = _split(rest)
        for command in block.commands:
            command.action = "block"
        return
    targets = block.commands if key == "all" else None
    if targets is None:
        if not key.isdigit() or not 1 <= int(key) <= len(block.commands):
            raise LabFormatError(f"{where}: expect line {entry!r}: no command {key}")
        targets = [block.commands[int(key) - 1]]
    for command in targets:
        if rest == "drill":
            command.action = "drill"
        elif rest.startswith("skip:"):
            command.action = "skip"
            command.reason = rest.removeprefix("skip:").strip()
            if not command.reason:
                raise LabFormatError(f"{where}: a skip needs a reason ({entry!r})")
        else:
            command.clauses = _split(rest)


def _split(text: str) -> list[str]:
    return [c.strip() for c in text.split(";") if c.strip()]


def _promises_value(clause: str) -> bool:
    match = _VALUE.match(clause)
    if not match or match.group(1) == "series":
        return False
    op, bound = match.group(3), float(match.group(4))
    return (op in (">=", "==") and bound > 0) or (op == ">" and bound >= 0)


def _check_clause(clause: str, query: bool, where: str) -> None:
    if _COUNT.match(clause) or _TEXT.match(clause):
        return
    if query and _VALUE.match(clause):
        return
    raise LabFormatError(f"{where}: cannot read the clause {clause!r}")


# --- checking an answer ------------------------------------------------------------------------


def _selected(result: list[dict], selector: str | None) -> list[dict]:
    wanted = dict(_LABEL.findall(selector or ""))
    return [s for s in result if all(s["metric"].get(k) == v for k, v in wanted.items())]


def query_failures(clauses: list[str], answer: dict) -> list[str]:
    """The clauses a ``lab query --json`` answer does not meet."""
    failures = []
    for clause in clauses:
        match = _VALUE.match(clause)
        if match is None:
            continue
        what, selector, op, bound = match.group(1), match.group(2), match.group(3), match.group(4)
        series = _selected(answer.get("result", []), selector)
        got: float | None
        if what == "series":
            got = float(len(series))
        elif answer.get("resultType") == "vector":
            if what != "value":
                failures.append(f"{clause}: {what} needs --range")
                continue
            got = sum(float(s["value"][1]) for s in series) if series else None
        else:
            if what == "value":
                failures.append(f"{clause}: value needs an instant query (no --range)")
                continue
            points = [[float(v) for _, v in s["values"]] for s in series if s["values"]]
            got = _reduce(what, points)
        if got is None or math.isnan(got) or not OPS[op](got, float(bound)):
            failures.append(f"{clause}: observed {got}")
    return failures


def _reduce(what: str, points: list[list[float]]) -> float | None:
    if not points:
        return None
    clean = [[v for v in p if not math.isnan(v)] for p in points]
    flat = [v for p in clean for v in p]
    if not flat:
        return None
    if what == "min":
        return min(flat)
    if what == "max":
        return max(flat)
    index = 0 if what == "first" else -1
    return sum(p[index] for p in clean if p)


def output_failures(clauses: list[str], stdout: str, code: int) -> list[str]:
    """The clauses a command's output and exit code do not meet (``exit`` defaults to 0)."""
    failures = []
    wanted_exit = 0.0
    for clause in clauses:
        count = _COUNT.match(clause)
        text = _TEXT.match(clause)
        if count:
            what, op, bound = count.group(1), count.group(2) or "==", float(count.group(3))
            if what == "exit":
                wanted_exit = bound
                op_exit = OPS[op]
                if not op_exit(code, bound):
                    failures.append(f"{clause}: exit {code}")
                continue
            if what == "lines":
                got: float | None = float(len([x for x in stdout.splitlines() if x.strip()]))
            else:
                try:
                    got = float(stdout.strip())
                except ValueError:
                    got = None
            if got is None or not OPS[op](got, bound):
                failures.append(f"{clause}: observed {got}")
        elif text:
            present = text.group(3) in stdout
            if present == bool(text.group(1)):
                failures.append(f"{clause}: output {'has' if present else 'lacks'} it")
    if not any(c.startswith("exit") for c in clauses) and code != wanted_exit:
        failures.append(f"exit {code}, expected 0")
    return failures


def parse_json(stdout: str) -> dict:
    return json.loads(stdout)
