"""moto's DynamoDB server, handling one request at a time, with an optional write journal.

moto's ``transact_write_items`` checks each condition, writes, and on a failure restores a deep
copy of the tables taken when it began; its threaded server runs requests in parallel. So two
concurrent transactions can both pass ``usd_balance >= :total``, and a cancelled one can roll back
writes another transaction committed meanwhile. Real DynamoDB isolates transactions, and the
platform's money invariants (and the labs that switch locks off to show it) rely on that.
Serialising request handling restores it; moto never ran requests truly in parallel (the GIL).

moto keeps its tables in memory, so a killed process used to lose every table, where a real
DynamoDB keeps its data through an outage of its clients' view of it. With ``--journal PATH``,
each write that succeeded is appended to the journal before its answer leaves, and a starting
server replays the journal before it listens: ``kill -9`` and a restart lose nothing that was
acknowledged. A line is flushed to the operating system, not fsynced: the process dying is the
failure a lab causes; the machine losing power is not. A torn last line (the process died while
writing it) was never acknowledged and is skipped.

Run like moto's server: ``python -m cnop.core.moto_server -H 127.0.0.1 -p 8010 [--journal F]``.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from moto import server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.test import EnvironBuilder, run_wsgi_app

_REQUEST_LOCK = threading.Lock()
_dispatch = DomainDispatcherApplication.__call__

# The DynamoDB operations that change state; everything else is a read.
WRITE_OPERATIONS = frozenset(
    {
        "CreateTable",
        "DeleteTable",
        "UpdateTable",
        "UpdateTimeToLive",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "ExecuteStatement",
        "BatchExecuteStatement",
        "ExecuteTransaction",
        "TagResource",
        "UntagResource",
    }
)
# What moto needs to route and attribute a request: the service and region come from these.
_KEPT_HEADERS = ("Authorization", "X-Amz-Target", "Content-Type", "Host", "X-Amz-Date")


class Journal:
    """An append-only file of the writes that succeeded, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = None

    def entries(self) -> Iterable[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    return  # torn by a crash while it was written: never acknowledged
                yield json.loads(line)

    def append(self, headers: dict[str, str], body: bytes) -> None:
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        record = {"headers": headers, "body": base64.b64encode(body).decode("ascii")}
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()


def operation(environ: dict[str, Any]) -> str:
    """``PutItem`` from ``X-Amz-Target: DynamoDB_20120810.PutItem``."""
    return str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2]


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    found = {}
    for name in _KEPT_HEADERS:
        key = "CONTENT_TYPE" if name == "Content-Type" else "HTTP_" + name.upper().replace("-", "_")
        if environ.get(key):
            found[name] = str(environ[key])
    return found


def serve_with(journal: Journal | None) -> Any:
    """A ``DomainDispatcherApplication.__call__`` that serialises requests and journals writes."""

    def call(self: DomainDispatcherApplication, environ: Any, start_response: Any) -> Any:
        with _REQUEST_LOCK:
            if journal is None or operation(environ) not in WRITE_OPERATIONS:
                # moto builds the whole response inside the call: the work is under the lock.
                return _dispatch(self, environ, start_response)
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            status: list[str] = []

            def record_status(code: str, headers: Any, exc_info: Any = None) -> Any:
                status.append(code)
                return start_response(code, headers, exc_info)

            answer = _dispatch(self, environ, record_status)
            if status and status[0].startswith("200"):
                journal.append(_headers(environ), body)
            return answer

    return call


def replay(journal: Journal) -> int:
    """Apply the journal's writes, in order, to moto's (empty) in-memory backends."""
    app = DomainDispatcherApplication(create_backend_app)
    count = 0
    for entry in journal.entries():
        builder = EnvironBuilder(
            method="POST",
            path="/",
            headers=entry["headers"],
            data=base64.b64decode(entry["body"]),
        )
        _app_iter, status, _headers_out = run_wsgi_app(app, builder.get_environ(), buffered=True)
        if not status.startswith("200"):
            print(f"journal entry {count + 1} did not replay: {status}", file=sys.stderr)
        count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--journal", type=Path, default=None)
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    journal = Journal(ours.journal) if ours.journal is not None else None
    if journal is not None:
        replayed = replay(journal)
        print(
            json.dumps({"event": "dynamodb_journal_replayed", "writes": replayed}),
            file=sys.stderr,
            flush=True,
        )
    DomainDispatcherApplication.__call__ = serve_with(journal)  # type: ignore[method-assign]
    server.main(rest)


if __name__ == "__main__":
    main()
