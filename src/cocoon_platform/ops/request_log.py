"""Logging: one line per request, as JSON when configured; never a key, a prompt or a completion."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

REQUEST_LOGGER = logging.getLogger("cocoon_platform.requests")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


# Control characters (newlines above all) and backslashes, as Python writes them in a literal.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def escape(text: str) -> str:
    """One line whatever the text: a value from a request can't forge a line of its own."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


class TextFormatter(logging.Formatter):
    """One line per record (a traceback follows on lines of its own); the message and the
    fields are escaped, since both may carry what a client sent (a path, a model)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        line = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={escape(str(v)) if isinstance(v, str) else v}" for k, v in fields.items())
        return line


def configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if as_json else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger("cocoon_platform")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def request_log_enabled() -> bool:
    return REQUEST_LOGGER.isEnabledFor(logging.INFO)


def log_request(fields: dict[str, Any]) -> None:
    """One line for one request; fields are identifiers, counts and times only."""
    REQUEST_LOGGER.info("request", extra={"fields": fields})
