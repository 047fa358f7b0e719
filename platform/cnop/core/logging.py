"""JSON logs, one event per line, carrying the request id and user of the current request.

Context travels in :mod:`contextvars`, so every log call inside a request handler (or a task it
spawns) is stamped without passing ids around.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
user_var: ContextVar[str | None] = ContextVar("user", default=None)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "service": self.service,
            "event": getattr(record, "event", None) or record.getMessage(),
            "request_id": request_id_var.get(),
        }
        user = user_var.get()
        if user:
            doc["user"] = user
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "event":
                doc[key] = value
        if record.exc_info:
            # Operators see the trace in the log; clients never do (see problems.py).
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "botocore", "urllib3", "httpx", "httpcore", "pynamodb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # uvicorn's own loggers go through the JSON handler instead of their coloured ones.
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


_log = logging.getLogger("cnop")


def log_event(
    event: str, level: int = logging.INFO, *, exc_info: BaseException | None = None, **fields: Any
) -> None:
    """Log one structured event; ``fields`` become top-level JSON keys."""
    _log.log(level, event, exc_info=exc_info, extra={"event": event, **fields})
