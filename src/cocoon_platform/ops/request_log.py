"""Logging: one line per request, as JSON when configured; never a key, a prompt or a completion."""

from __future__ import annotations

import logging
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


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        line = super().format(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("cocoon_platform")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def request_log_enabled() -> bool:
    return REQUEST_LOGGER.isEnabledFor(logging.INFO)


def log_request(fields: dict[str, Any]) -> None:
    """One line for one request; fields are identifiers, counts and times only."""
    REQUEST_LOGGER.info("request", extra={"fields": fields})
