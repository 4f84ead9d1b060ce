"""Deterministic token arithmetic, word streams, request markers and the prompt-prefix cache."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable

import orjson

CACHE_BLOCK_TOKENS = 16  # cached_tokens is always a multiple of this
TEXT_BLOCK_BYTES = CACHE_BLOCK_TOKENS * 4  # 4 bytes per token, so one text block = one cache block
MARKER_PREFIX = b"[[sim:"  # cheap pre-check on the raw body before any marker parsing
_MARKER_RE = re.compile(r"\[\[sim:([a-z_]+)=([^\]\s]*)\]\]")
_CYCLE = 4096  # length of the precomputed word sequence; answers start anywhere in it

_ENGLISH = (
    "the of and to in is that it was for on are as with his they at be this from have or by one"
    " had not but what all were when we there can an your which their said if do will each about"
    " how up out them then she many some so these would other into has more her two like him see"
    " time could no make than first been its who now people my made over did down only way find"
    " use may water long little very after words called just where most know get through back"
    " much before go good new write our used me man too any day same right look think also around"
    " another came come work three word must because does part even place well such here take why"
    " things help put years different away again off went old number great tell men say small"
    " every found still between name should home big give air line set own under read last never"
    " us left end along while might next sound below saw something thought both few those always"
    " looked show large often together asked house world going want school important until form"
    " food keep children feet land side without boy once animals life enough took sometimes four"
    " head above kind began almost live page got earth need far hand high year mother light parts"
    " country father let night following picture being study second eyes soon times story boys"
).split()
_CHINESE = (
    "我 你 他 她 们 的 是 在 有 这 那 个 人 中 大 小 上 下 来 去 说 看 想 要 能 会 好 很 也 都 和 就"
    " 不 没 了 着 过 天 年 月 日 时 候 家 国 水 火 山 风 雨 花 书 学 生 工 作 今 明 朝 新 心 手 口"
    " 世界 朋友 时间 问题 我们 他们 知道 喜欢 已经 因为 所以 但是 可以 还是 非常 一起 今天 明天"
).split()


def count_tokens(data: bytes) -> int:
    """Tokens of a text: ceil(utf8_bytes / 4), so 0 for empty and at least 1 otherwise."""
    return (len(data) + 3) // 4


class WordCycle:
    """A fixed pseudo-random sequence of word tokens; an answer is a window into it.

    The text is stored twice over so any window up to one cycle long is a single slice.
    """

    __slots__ = ("json_tokens", "_text", "_starts")

    def __init__(self, words: list[str], separator: str, seed: int) -> None:
        state = seed
        picked: list[str] = []
        for _ in range(_CYCLE):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF  # classic LCG: stable everywhere
            picked.append(separator + words[(state >> 16) % len(words)])
        self.json_tokens: tuple[bytes, ...] = tuple(orjson.dumps(t) for t in picked)
        starts = [0]
        for token in picked + picked:
            starts.append(starts[-1] + len(token))
        self._starts: tuple[int, ...] = tuple(starts)
        self._text = "".join(picked) * 2

    def text(self, offset: int, count: int) -> str:
        """The `count` tokens from position `offset` as one string (wrapping around)."""
        offset %= _CYCLE
        laps, rest = divmod(count, _CYCLE)
        starts = self._starts
        text = self._text[starts[offset] : starts[offset + rest]]
        if laps:
            text = self._text[starts[offset] : starts[offset + _CYCLE]] * laps + text
        return text

    def json_token(self, index: int) -> bytes:
        """Token number `index` (any integer) as a JSON string literal."""
        return self.json_tokens[index % _CYCLE]


ENGLISH_WORDS = WordCycle(_ENGLISH, " ", seed=20240601)
CHINESE_WORDS = WordCycle(_CHINESE, "", seed=20240602)


def find_markers(texts: Iterable[str]) -> dict[str, str]:
    """`[[sim:key=value]]` markers found in the texts; a later marker wins."""
    found: dict[str, str] = {}
    for text in texts:
        for key, value in _MARKER_RE.findall(text):
            found[key] = value
    return found


class PrefixCache:
    """Bounded LRU of prompt-prefix keys, each mapped to that prefix's token length.

    A prompt contributes one key per message (chat) or per 64-byte block (text); keys chain
    the previous key, so a hit on key i means the whole prefix up to i was seen before.
    """

    __slots__ = ("_entries", "_capacity")

    def __init__(self, capacity: int) -> None:
        self._entries: OrderedDict[int, int] = OrderedDict()
        self._capacity = capacity

    def remember(self, keys: list[int], lengths: list[int]) -> int:
        """Store the prompt's prefixes; return the token length of the longest one seen before."""
        entries = self._entries
        longest = 0
        for i in range(len(keys) - 1, -1, -1):
            if keys[i] in entries:
                longest = entries[keys[i]]
                break
        for key, length in zip(keys, lengths, strict=True):
            entries[key] = length
            entries.move_to_end(key)
        while len(entries) > self._capacity:
            entries.popitem(last=False)
        return longest

    def __len__(self) -> int:
        return len(self._entries)
