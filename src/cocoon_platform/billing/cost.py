"""What a metered request costs: the pure rules, no I/O.

Every endpoint that bills asks `bill()` once the request has ended. The rules, in order:
- A request the network never took (`upstream_error`: refused, unreachable) costs nothing.
- The upstream's reported usage is the truth when it counts at least the completion tokens
  that were delivered (`Delivered`); its reported `total_cost`, when positive, is the network's cost.
- Otherwise (never reported, unusable, or fewer tokens than were delivered) the request is billed
  for what was delivered, estimated, and the prompt from its text when the upstream never said.
- A request sent twice (a required tool call not made: one retry, `proxy/attempts.py`) is billed
  for both attempts once the network took the second, each by the rules above: a second attempt
  cut, timed out or left by its caller adds what it generated to the first's bill, and neither
  is lost to the other's failure. An attempt that never reported its prompt's tokens is billed
  the other's count (both sent the same prompt; uncached, the dearer way). Their network costs
  are added, each the network's own or worked out from its tokens, as the network bills each.
The charge is the network cost with the markup, rounded up once (`Pricer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cocoon_platform.billing.prices import NetworkPrices, Pricer, TokenCounts

MAX_TOKEN_COUNT = 2**31 - 1  # the usage record's token columns are 32-bit integers


class UsageStatus(StrEnum):
    """How a metered request ended: the usage record's `status` (stored as its string value)."""

    OK = "ok"
    CLIENT_DISCONNECTED = "client_disconnected"  # the caller left mid-stream
    UPSTREAM_CUT = "upstream_cut"  # the network's answer broke off after it began
    UPSTREAM_ERROR = "upstream_error"  # the network refused or never answered
    ABORTED = "aborted"  # something unforeseen (or cancellation) ended the request
    ORPHANED = "orphaned"  # the platform process died mid-request: the sweeper released the hold at 0


# The chat template's generation prompt ("<|im_start|>assistant\n") and the empty think block
# Qwen3's template adds when thinking is off: at most this many tokens beyond the messages.
GENERATION_PROMPT_TOKENS = 8


def prompt_token_bound(forwarded_bytes: int, chat: bool) -> int:
    """A prompt's tokens when the network never reported them: never under the real count (#14).

    `forwarded_bytes` is the size of everything forwarded that the network renders: a chat's
    messages as JSON (contents, names, tool calls and results as the tools package renders them,
    roles), a completion's prompt. A byte-level BPE token is never shorter than one byte, so the
    bytes bound the tokens whatever the text (digits and CJK run at 1-3 bytes a token, English
    near 4); a message's JSON keys and quotes outweigh the template's tokens around it."""
    if not forwarded_bytes:
        return 0
    return forwarded_bytes + (GENERATION_PROMPT_TOKENS if chat else 0)


def chat_prompt_tokens(content_tokens: list[int]) -> int:
    """A chat prompt's tokens as Qwen3's template renders it, from each message's content tokens:
    `<|im_start|>role\n` and `<|im_end|>\n` around each (5 tokens; a name is not rendered), then
    the generation prompt and, at most, an empty think block."""
    return sum(content_tokens) + 5 * len(content_tokens) + GENERATION_PROMPT_TOKENS


def delivered_tokens(chunks: int, characters: int) -> int:
    """Tokens relayed in a stream: one per chunk, as servers usually send them, unless the chunks
    average more than a long token's worth of text, which means they carry several each: then one
    a character, never under the real count for digits or CJK (a token is at least a character
    but for the rare character the vocabulary splits)."""
    return chunks if characters <= 8 * chunks else characters


def _count(value: Any) -> int:
    """A token count the upstream reported: a positive integer, at most what the record holds
    (a database refusing the record would leave the request unsettled)."""
    return min(value, MAX_TOKEN_COUNT) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_tokens(usage: Any) -> TokenCounts | None:
    """Token counts from an upstream usage object (reasoning in either place), or None when
    it holds no usable count, so the request is billed by estimate rather than as free."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (_count(prompt) or _count(completion)):
        return None
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    reasoning = reasoning or _count(usage.get("reasoning_tokens"))
    prompt, completion = _count(prompt), _count(completion)
    return TokenCounts(
        prompt=prompt, completion=completion, cached=min(cached, prompt), reasoning=min(reasoning, completion)
    )


def reported_cost(usage: dict[str, Any]) -> int | None:
    """The network's own cost of the request in nanoTON, when the usage carries one."""
    cost = usage.get("total_cost")
    return cost if isinstance(cost, int) and not isinstance(cost, bool) else None


@dataclass(frozen=True, slots=True)
class Delivered:
    """What the network sent of one attempt's answer, counted as it arrived (relayed to the caller,
    held back while a tool call is awaited, or assembled into a whole answer): its text chunks,
    those that were reasoning, and their text's size."""

    completion: int = 0
    reasoning: int = 0
    size: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """The first attempt of a request sent twice: its usage object as the network reported it
    (None: never) and what it delivered."""

    usage: dict[str, Any] | None
    delivered: Delivered


@dataclass(frozen=True, slots=True)
class Bill:
    tokens: TokenCounts
    charge: int  # nanoTON, marked up
    estimated: bool  # the counts are the platform's estimate, not the network's report


def bill(
    pricer: Pricer,
    prices: NetworkPrices,
    status: UsageStatus,
    usage: dict[str, Any] | None,
    delivered: Delivered,
    estimate_prompt: Callable[[], int],
    earlier: Attempt | None = None,
) -> Bill:
    """The charge of one ended request (see the module's rules): `usage` and `delivered` are its
    last attempt's, `earlier` its first when it was sent twice. `estimate_prompt` is called only
    when no attempt reported the prompt's tokens."""
    if status is UsageStatus.UPSTREAM_ERROR:
        return Bill(TokenCounts(0, 0), 0, False)
    if earlier is None:
        tokens, cost, estimated = _attempt(pricer, prices, usage, delivered, estimate_prompt)
        return Bill(tokens, pricer.marked_up(cost), estimated)
    known = usage_tokens(earlier.usage) or usage_tokens(usage)

    def prompt() -> int:
        return known.prompt if known is not None else estimate_prompt()

    first, first_cost, first_estimated = _attempt(pricer, prices, earlier.usage, earlier.delivered, prompt)
    last, last_cost, last_estimated = _attempt(pricer, prices, usage, delivered, prompt)
    tokens = TokenCounts(  # each within what the record holds, as one attempt's counts are
        prompt=min(first.prompt + last.prompt, MAX_TOKEN_COUNT),
        completion=min(first.completion + last.completion, MAX_TOKEN_COUNT),
        cached=min(first.cached + last.cached, MAX_TOKEN_COUNT),
        reasoning=min(first.reasoning + last.reasoning, MAX_TOKEN_COUNT),
    )
    return Bill(tokens, pricer.marked_up(first_cost + last_cost), first_estimated or last_estimated)


def _attempt(
    pricer: Pricer,
    prices: NetworkPrices,
    usage: dict[str, Any] | None,
    delivered: Delivered,
    estimate_prompt: Callable[[], int],
) -> tuple[TokenCounts, int, bool]:
    """One attempt's tokens, its network cost (nanoTON, before the markup), and whether they are
    the platform's estimate."""
    reported = usage_tokens(usage)
    if reported is not None and reported.completion >= delivered.completion:
        # Reported usage is the truth, even when the stream broke after reporting it.
        return reported, pricer.cost(prices, reported, reported_cost(usage or {})), False
    completion = delivered_tokens(delivered.completion, delivered.size)
    tokens = TokenCounts(
        prompt=reported.prompt if reported else estimate_prompt(),
        completion=completion,
        cached=reported.cached if reported else 0,
        reasoning=min(delivered.reasoning, completion),
    )
    return tokens, pricer.cost(prices, tokens, None), True
