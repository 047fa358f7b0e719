"""What every runtime keeps on disk for a sandbox: ``state.json`` and the lock guarding it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from scenarios.runtime.base import RuntimeError_


class SandboxLock:
    """One writer per sandbox: threads of this process and other `lab` processes alike.

    Re-entrant within a process (a runtime method holding it may call another that takes it),
    an ``flock`` on ``HOME/.lock`` across processes.
    """

    def __init__(self, home: Path) -> None:
        self._home = home
        self._rlock = threading.RLock()
        self._depth = 0
        self._file: IO[str] | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._rlock:
            if self._depth == 0:
                self._home.mkdir(parents=True, exist_ok=True)
                self._file = (self._home / ".lock").open("a")
                fcntl.flock(self._file, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._file is not None:
                    fcntl.flock(self._file, fcntl.LOCK_UN)
                    self._file.close()
                    self._file = None


def read_state(state_file: Path) -> dict[str, Any] | None:
    """The recorded state, None when nothing was started; unreadable is one clear error."""
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RuntimeError_(f"{state_file} is unreadable ({exc}); remove it") from exc
    return state if isinstance(state, dict) else None
