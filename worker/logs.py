"""Structured logs: every line of a charge carries its charge id and recurrentId.

Tasks set the context (:func:`bind`); a logging filter copies it onto each record, so the
format can print ``charge=.. recurrent=..`` (or JSON with ``BILLING_LOG_FORMAT=json``). The
NAVER Pay client never logs headers, so the client secret cannot reach a log line; a last
filter masks it anyway, should any library print it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "npay_log_context", default=None)

TEXT_FORMAT = ("%(asctime)s %(levelname)s [%(processName)s] %(name)s "
               "charge=%(charge_id)s recurrent=%(recurrent_id)s: %(message)s")


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` (e.g. charge_id, recurrent_id) to every log line in this block."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound context onto records and masks the client secret."""

    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret or os.environ.get("NAVERPAY_CLIENT_SECRET") or None

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for name in ("charge_id", "recurrent_id", "subscription_id"):
            if not hasattr(record, name):
                setattr(record, name, context.get(name, "-"))
        if self.secret and len(self.secret) >= 6:
            message = record.getMessage()
            if self.secret in message:
                record.msg, record.args = message.replace(self.secret, "***"), ()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "process": record.processName, "message": record.getMessage()}
        for name in ("charge_id", "recurrent_id", "subscription_id"):
            value = getattr(record, name, "-")
            if value != "-":
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def install(logger: logging.Logger | None = None) -> None:
    """Add the filter and our format to every handler of ``logger`` (root by default)."""
    logger = logger or logging.getLogger()
    formatter: logging.Formatter = (JsonFormatter() if os.environ.get("BILLING_LOG_FORMAT") == "json"
                                    else logging.Formatter(TEXT_FORMAT))
    for handler in logger.handlers:
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())
        handler.setFormatter(formatter)
