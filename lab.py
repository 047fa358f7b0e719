"""`lab`: the CNOP Lab command line (installed by pyproject's ``[project.scripts]``).

A thin Typer app: each area registers its commands from its own module, so the platform commands,
the drills and the image builder evolve separately. A module that is not installed (yet) is
skipped, never fatal. User errors print one line on stderr and exit non-zero; set
``CNOP_LAB_DEBUG=1`` to see a traceback for an unexpected error.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer

from scenarios.runtime.base import RuntimeError_

COMMAND_MODULES = (
    "scenarios.cli_platform",
    "scenarios.cli_query",
    "scenarios.cli_drills",
    "scenarios.cli_images",
    "scenarios.cli_instructor",
    "scenarios.cli_flaws",
    "scenarios.cli_security",
)


class LabApp(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except RuntimeError_ as exc:
            _fail(str(exc), 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:
            if os.environ.get("CNOP_LAB_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (CNOP_LAB_DEBUG=1 shows more)", 1)


def _fail(message: str, code: int) -> None:
    print(f"lab: {message}", file=sys.stderr)
    sys.exit(code)


app = LabApp(
    name="lab",
    help="CNOP Lab: run the trading platform, attack it, break it, and grade how it holds up.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ImportError as _exc:
        if _exc.name != _name:  # present but broken: the other commands still work
            print(f"lab: {_name} skipped: {_exc}", file=sys.stderr)
        continue
    _module.register(app)


if __name__ == "__main__":
    app()
