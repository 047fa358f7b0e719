"""What every `lab` command shares: exit codes, ``--json`` output, errors, name suggestions.

An autograder drives `lab` by its exit code and, with ``--json``, by one JSON object on stdout;
both are promises (docs/cli.md), so they are made here once rather than in each command:

* ``0`` done, and the verdict (if the command has one) is positive;
* ``1`` done, and the verdict is negative: a run graded and failed, a component not ready;
* ``2`` usage error: unknown command, option, scenario or parameter, a value out of bounds;
* ``3`` could not do it: the platform is not running, Prometheus does not answer, a bundle set
  cannot be graded, an unexpected internal error.

A command raises :class:`UsageError` or :class:`Unavailable` (or the runtimes'
``RuntimeError_``, which counts as unavailable); :class:`LabGroup` turns any of them into one
line on stderr and the exit code, and, when the command line asked for ``--json``, into
``{"command": ..., "exit_code": ..., "error": ...}`` on stdout as well. Set
``CNOP_LAB_DEBUG=1`` to see a traceback of an unexpected error.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from scenarios.runtime.base import RuntimeError_

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Failed",
    "JsonOption",
    "LabError",
    "LabGroup",
    "Unavailable",
    "UsageError",
    "did_you_mean",
    "emit_json",
    "finish",
    "unknown_name",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it

JsonOption = Annotated[
    bool,
    typer.Option("--json", help="print one JSON object on stdout (shapes: docs/cli.md)"),
]


class LabError(Exception):
    """A failure the user reads as one line; ``code`` is the exit code."""

    code = EXIT_UNAVAILABLE


class UsageError(LabError):
    """The command line asked for something that does not exist or is out of bounds."""

    code = EXIT_USAGE


class Failed(LabError):
    """The command did its job and the verdict is negative (a smoke test's step failed)."""

    code = EXIT_FAILED


class Unavailable(LabError):
    """The command cannot do its job now: platform down, nothing to grade, engine missing."""

    code = EXIT_UNAVAILABLE


def emit_json(command: str, exit_code: int, **fields: Any) -> None:
    """The one JSON object a ``--json`` command prints: ``command`` and ``exit_code`` first,
    then the command's own fields (documented per command in docs/cli.md)."""
    document = {"command": command, "exit_code": exit_code, **fields}
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def finish(command: str, exit_code: int, as_json: bool, **fields: Any) -> NoReturn:
    """End a command: with ``--json`` print its object, then exit with ``exit_code``."""
    if as_json:
        emit_json(command, exit_code, **fields)
    raise typer.Exit(exit_code)


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to a misspelt ``name`` (difflib), or None."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_name(kind: str, name: str, choices: Sequence[str]) -> str:
    """``unknown scenario 'uptream-outage'; did you mean 'upstream-outage'? (known: ...)``"""
    guess = did_you_mean(name, choices)
    hint = f"; did you mean {guess!r}?" if guess else ""
    known = ", ".join(choices) or "none"
    return f"unknown {kind} {name!r}{hint} (known: {known})"


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class LabGroup(TyperGroup):
    """The `lab` group: maps errors to exit codes inside the click invocation, so a test's
    CliRunner sees the same codes and messages as a shell does."""

    def invoke(self, ctx: typer.Context) -> Any:
        argv = [*getattr(ctx, "_protected_args", []), *ctx.args]
        command = self._command_name(argv)
        try:
            return super().invoke(ctx)
        except LabError as exc:
            self._fail(command, argv, str(exc), exc.code)
        except RuntimeError_ as exc:
            self._fail(command, argv, str(exc), EXIT_UNAVAILABLE)
        except KeyboardInterrupt:
            self._fail(command, argv, "interrupted", EXIT_INTERRUPTED)
        except (typer.Exit, typer.Abort, TyperException):  # the parser's usage errors: exit 2
            raise
        except Exception as exc:
            if os.environ.get("CNOP_LAB_DEBUG"):
                raise
            message = f"internal error: {type(exc).__name__}: {exc} (CNOP_LAB_DEBUG=1 shows more)"
            self._fail(command, argv, message, EXIT_UNAVAILABLE)

    def _command_name(self, argv: Sequence[str]) -> str:
        """``run``, or ``assignment new`` for a command of a sub-group (as --json names it)."""
        words = [a for a in argv if not a.startswith("-")]
        if not words:
            return "lab"
        group = self.commands.get(words[0])
        if isinstance(group, TyperGroup) and len(words) > 1:
            return f"{words[0]} {words[1]}"
        return words[0]

    @staticmethod
    def _fail(command: str, argv: Sequence[str], message: str, code: int) -> NoReturn:
        line = _one_line(message)
        if "--json" in argv:
            emit_json(command, code, error=line)
        print(f"lab: {line}", file=sys.stderr)
        raise typer.Exit(code)
