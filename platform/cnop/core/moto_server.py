"""moto's DynamoDB server, handling one request at a time so transactions are atomic.

moto's ``transact_write_items`` checks each condition, writes, and on a failure restores a deep
copy of the tables taken when it began; its threaded server runs requests in parallel. So two
concurrent transactions can both pass ``usd_balance >= :total``, and a cancelled one can roll back
writes another transaction committed meanwhile. Real DynamoDB isolates transactions, and the
platform's money invariants (and the labs that switch locks off to show it) rely on that.
Serialising request handling restores it; moto never ran requests truly in parallel (the GIL).

Run exactly like moto's server: ``python -m cnop.core.moto_server -H 127.0.0.1 -p 8010``.
"""

from __future__ import annotations

import threading
from typing import Any

from moto import server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_REQUEST_LOCK = threading.Lock()
_dispatch = DomainDispatcherApplication.__call__


def _serialised(self: DomainDispatcherApplication, environ: Any, start_response: Any) -> Any:
    with _REQUEST_LOCK:
        # moto builds the whole response inside the call: the backend work is under the lock.
        return _dispatch(self, environ, start_response)


def main(argv: list[str] | None = None) -> None:
    DomainDispatcherApplication.__call__ = _serialised  # type: ignore[method-assign]
    server.main(argv)


if __name__ == "__main__":
    main()
