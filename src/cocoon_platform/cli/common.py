"""What every command shares: its one-line failure, the settings, the event loop.

Command modules import from here, never from the package's `__init__` (which imports them to
build the parser), so there is no import cycle between the parser and its commands.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from cocoon_platform.config import Settings

Subparsers = argparse._SubParsersAction  # the type argparse gives add_subparsers() no public name for


class CommandError(Exception):
    """A failure to report in one line, with a non-zero exit."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            name = f"COCOON_{field.upper()}" if field != "settings" else field
            lines.append(f"  {name}: {error['msg']}")
        raise CommandError("invalid configuration:\n" + "\n".join(lines)) from None


def run_async(factory: Callable[[], Coroutine[Any, Any, int]]) -> int:
    return asyncio.run(factory())
