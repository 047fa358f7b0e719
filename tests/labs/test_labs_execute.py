"""Every lab, executed: its drill, then every command of every block, each checked against the
promise written next to it in the Markdown (``<!-- expect ... -->``, see tests/labs/labmd.py).

One sandbox serves all labs (``lab reset`` between them). So that no lab passes on another's
evidence, every command is scoped to its own lab's drill: a ``[5m]`` range and ``--range 5m``
become the seconds since that drill started, and ``lab logs`` gets ``--since`` that moment. The
labs' default ports (gateway 8080, Prometheus 9090) are shifted to the sandbox's.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.labs.labmd import (
    Block,
    Command,
    LabFormatError,
    output_failures,
    parse_json,
    parse_lab,
    query_failures,
)
from tests.sandbox import LAB, Sandbox, lab_sandbox

pytestmark = pytest.mark.labs

ROOT = Path(__file__).resolve().parents[2]
LABS_DIR = ROOT / "labs"
# The security track's labs (labs/security/*.md) run in the same sandbox. They have no drill:
# their graded step is a `lab scan` (or a probe) written as an ordinary command with its promise,
# and every command is scoped to the lab's own start instead of a drill's.
SECURITY = "security/"
LABS = [
    *sorted(p.name for p in LABS_DIR.glob("[0-9]*.md")),
    "README.md",
    *sorted(f"{SECURITY}{p.name}" for p in (LABS_DIR / "security").glob("*.md")),
]
COMMAND_TIMEOUT_S = 120.0
durations: dict[str, float] = {}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    # A generous start-up: this module starts one sandbox for nine labs, and a failed start
    # would fail all of them on a busy machine.
    with lab_sandbox(tmp_path_factory.mktemp("labs-home"), 16000, up_timeout=180) as box:
        yield box
    if durations:
        lines = "\n".join(f"  {name:32s} {secs:6.1f} s" for name, secs in durations.items())
        total = sum(durations.values())
        print(f"\nlab durations (drill and commands):\n{lines}\n  {'total':32s} {total:6.1f} s")


def test_every_block_of_every_lab_has_readable_promises() -> None:
    """Runs without a sandbox: a block added without an expect comment fails here at once."""
    problems = []
    for name in LABS:
        try:
            parse_lab(LABS_DIR / name)
        except LabFormatError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)


def test_a_query_that_may_answer_zero_is_refused(tmp_path: Path) -> None:
    lab = tmp_path / "lab.md"
    lab.write_text(
        "```bash\nlab query 'sum(increase(x_total[5m]))'\n```\n<!-- expect\n1: series >= 1\n-->\n"
    )
    with pytest.raises(LabFormatError, match="no promise of a value above zero"):
        parse_lab(lab)


def test_a_block_without_promises_is_refused(tmp_path: Path) -> None:
    lab = tmp_path / "lab.md"
    lab.write_text("```bash\nlab status\n```\n\nText.\n")
    with pytest.raises(LabFormatError, match="without an `<!-- expect` comment"):
        parse_lab(lab)


def test_an_answer_of_only_zeros_breaks_a_promise() -> None:
    zeros = {"resultType": "vector", "result": [{"metric": {"to": "open"}, "value": [1, "0"]}]}
    promise = 'value{to="open"} >= 1'
    assert query_failures([promise], zeros) == [f"{promise}: observed 0.0"]
    ranged = {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "0"], [2, "2"]]}]}
    assert query_failures(["max >= 2", "last == 2", "min == 0"], ranged) == []


# --- running a lab ------------------------------------------------------------------------------


class LabRun:
    def __init__(self, box: Sandbox, lab: str, workdir: Path) -> None:
        self.box = box
        self.lab = lab
        self.workdir = workdir
        self.drill_started: datetime | None = None
        self.failures: list[str] = []
        self.ran = 0
        self.skipped: list[str] = []

    def scoped(self, text: str) -> str:
        gateway_port = self.box.gateway.rsplit(":", 1)[1]
        prometheus_port = self.box.prometheus.rsplit(":", 1)[1]
        text = text.replace("127.0.0.1:8080", f"127.0.0.1:{gateway_port}")
        text = text.replace("127.0.0.1:9090", f"127.0.0.1:{prometheus_port}")
        if self.drill_started is None:
            return text
        age = math.ceil((datetime.now(UTC) - self.drill_started).total_seconds()) + 2
        text = text.replace("[5m]", f"[{age}s]").replace("--range 5m", f"--range {age}s")
        since = self.drill_started.isoformat()
        return re.sub(r"\blab logs (\w+)(?![^|;&]*--since)", rf"lab logs \1 --since {since}", text)

    def bash(self, script: str) -> subprocess.CompletedProcess[str]:
        env = {**self.box.env, "PATH": f"{Path(LAB).parent}:{self.box.env.get('PATH', '')}"}
        return subprocess.run(
            ["bash", "-c", script],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )

    def drill(self, command: Command) -> None:
        self.drill_started = datetime.now(UTC)
        words = command.words()
        out = self.workdir / f"run-{command.line}"
        done = self.bash(f"{' '.join(words)} --out {out}")
        self.ran += 1
        if done.returncode != 0:
            # Reported first; the lab's commands still run, so one CI run shows everything.
            self.failures.insert(
                0,
                f"{command.where()}: the drill failed ({done.returncode}):\n"
                f"{_table_only(done.stdout)}\n{done.stderr[-1500:]}",
            )
        print(f"{self.lab}: drill {command.text!r} exit {done.returncode}")

    def command(self, command: Command) -> None:
        self.ran += 1
        if command.is_query:
            words = command.words()
            done = self.bash(self.scoped(" ".join(_quote(w) for w in [*words, "--json"])))
            problems = output_failures(
                [c for c in command.clauses if c.startswith("exit")], "", done.returncode
            )
            if done.returncode == 0:
                problems += query_failures(command.clauses, parse_json(done.stdout))
        else:
            done = self.bash(self.scoped(command.text))
            problems = output_failures(command.clauses, done.stdout, done.returncode)
        if problems:
            self.failures.append(
                f"{command.where()}: {'; '.join(problems)}\n    stdout: {done.stdout[-600:]!r}"
                f"\n    stderr: {done.stderr[-400:]!r}"
            )

    def block(self, block: Block) -> None:
        self.ran += 1
        done = self.bash(self.scoped(block.script))
        problems = output_failures(block.whole or [], done.stdout, done.returncode)
        if problems:
            self.failures.append(
                f"block at line {block.line}: {'; '.join(problems)}\n    stdout: "
                f"{done.stdout[-600:]!r}\n    stderr: {done.stderr[-400:]!r}"
            )


def _table_only(stdout: str) -> str:
    """The drill's result table and verdict, without the log lines of an error message."""
    lines = stdout.splitlines()
    table = [i for i, line in enumerate(lines) if "┏" in line]
    return "\n".join(lines[table[0] - 1 :] if table else lines[-40:])[-4000:]


def _quote(word: str) -> str:
    return word if re.fullmatch(r"[\w./=:-]+", word) else "'" + word.replace("'", "'\\''") + "'"


def workdir_for(tmp_path: Path) -> Path:
    """The lab's working directory: reports land in its own ``runs/``, and the repository's
    ``labs/`` and ``security/`` are where a student's checkout has them (labs read
    ``labs/security/examples/`` and ``security/zap-rules.tsv``)."""
    for name in ("labs", "security"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    return tmp_path


@pytest.mark.parametrize("lab", LABS)
def test_lab_does_what_its_text_promises(lab: str, sandbox: Sandbox, tmp_path: Path) -> None:
    started = time.monotonic()
    blocks = parse_lab(LABS_DIR / lab)
    drills = [c for b in blocks for c in b.commands if c.action == "drill"]
    if lab.startswith(SECURITY):
        assert not drills, f"{lab}: a security lab runs no drill; its graded step is a scan"
    else:
        assert len(drills) == 1, f"{lab}: exactly one command must be the lab's drill"
    reset = sandbox.lab("reset")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    run = LabRun(sandbox, lab, workdir_for(tmp_path))
    if lab.startswith(SECURITY):
        run.drill_started = datetime.now(UTC)  # its queries and logs reach back to its start
    for block in blocks:
        if block.whole is not None:
            if run.drill_started is None:
                pytest.fail(f"{lab}: a block before the drill cannot run as a whole")
            run.block(block)
            continue
        for command in block.commands:
            if command.action == "skip":
                run.skipped.append(f"{command.where()}: {command.reason}")
            elif command.action == "drill":
                run.drill(command)
            elif run.drill_started is None and command.is_query:
                run.failures.append(f"{command.where()}: a query before the lab's drill")
            else:
                run.command(command)
    durations[lab] = time.monotonic() - started
    print(f"{lab}: ran {run.ran} commands, skipped {len(run.skipped)} in {durations[lab]:.1f} s")
    for skipped in run.skipped:
        print(f"  skipped {skipped}")
    assert not run.failures, f"{lab}: promises broken:\n" + "\n".join(run.failures)
