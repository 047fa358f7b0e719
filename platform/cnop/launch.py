"""Start several services from one interpreter that imported them once.

``python -m cnop.launch`` reads a JSON list of ``{"service", "env", "log", "cwd"}`` on stdin,
imports those services, forks one process per service and prints ``{"service": pid, ...}`` on
stdout, then exits: each child is a session leader of its own, writes to its own log and runs
exactly what ``python -m cnop.run SERVICE`` runs, with exactly the environment it was given.

Why: six interpreters importing FastAPI, pydantic, botocore... spend about 1.5 CPU-seconds
each, some 9 s on a two-core laptop before the first service answers. One import and six forks
take about 2 s, and the children share the imported pages copy-on-write instead of holding six
copies of them. Fork after import is only safe where no thread or event loop exists yet (none
does here: the services start both in ``cnop.run``), and only on Linux is it the norm for a
Python process, so the lab uses this launcher there and ``python -m cnop.run`` elsewhere.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import traceback
from typing import Any

from cnop import run


def _child(order: dict[str, Any]) -> int:
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    os.chdir(order["cwd"])
    os.environ.clear()
    os.environ.update(order["env"])
    gc.enable()
    try:
        return run.main([order["service"]])
    except SystemExit as exc:  # uvicorn exits 3 when the app fails to start
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def main() -> int:
    orders: list[dict[str, Any]] = json.load(sys.stdin)
    gc.disable()  # no collection may touch (and so copy) the pages the children will share
    for order in orders:
        if order["service"] not in run.SERVICES:
            print(f"cnop.launch: unknown service {order['service']!r}", file=sys.stderr)
            return 2
        importlib.import_module(f"cnop.services.{order['service']}.main")
    gc.freeze()
    pids: dict[str, int] = {}
    for order in orders:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            os._exit(_child(order))  # never back into this loop, nor the parent's exit hooks
        pids[order["service"]] = pid
    json.dump(pids, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
