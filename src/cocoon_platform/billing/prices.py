"""Network prices and the exact integer arithmetic of charges and reservations.

The network computes a request's cost as
    adj(n, m) = floor(n * coefficient/1000 * m/10000)
    cost = [adj(prompt - cached, prompt_m) + adj(cached, cached_m)
            + adj(completion - reasoning, completion_m) + adj(reasoning, reasoning_m)] * price_per_token
and the platform charges ceil(cost * markup): one rounding, upward, per request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

MULTIPLIER_ONE = 10_000  # the root contract's multipliers: 10000 = 1.0x
COEFFICIENT_ONE = 1_000  # worker price coefficients: 1000 = 1.0x


@dataclass(frozen=True, slots=True)
class NetworkPrices:
    price_per_token: int
    prompt_multiplier: int
    cached_multiplier: int
    completion_multiplier: int
    reasoning_multiplier: int
    source: str = "default"  # "default" (configured) or "live" (read from the client's /jsonstats)
    fetched_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class TokenCounts:
    prompt: int
    completion: int
    cached: int = 0
    reasoning: int = 0


def _adjusted(tokens: int, multiplier: int, coefficient: int) -> int:
    return tokens * coefficient * multiplier // (COEFFICIENT_ONE * MULTIPLIER_ONE)


def network_cost(prices: NetworkPrices, tokens: TokenCounts, coefficient: int = COEFFICIENT_ONE) -> int:
    """What the network charges for these tokens, in nanoTON (its own floor rounding)."""
    cached = min(max(tokens.cached, 0), max(tokens.prompt, 0))
    reasoning = min(max(tokens.reasoning, 0), max(tokens.completion, 0))
    units = (
        _adjusted(max(tokens.prompt, 0) - cached, prices.prompt_multiplier, coefficient)
        + _adjusted(cached, prices.cached_multiplier, coefficient)
        + _adjusted(max(tokens.completion, 0) - reasoning, prices.completion_multiplier, coefficient)
        + _adjusted(reasoning, prices.reasoning_multiplier, coefficient)
    )
    return units * prices.price_per_token


class Pricer:
    """Turns network costs into charges with the markup, rounding up once."""

    def __init__(self, markup: Decimal, coefficient: int) -> None:
        self.markup = Fraction(markup)
        self.coefficient = coefficient
        self._ceilings: tuple[NetworkPrices, int, int, int] | None = None

    def marked_up(self, network_nanoton: int) -> int:
        """ceil(network cost x markup), exactly."""
        scaled = network_nanoton * self.markup.numerator
        return -(-scaled // self.markup.denominator)

    def cost(self, prices: NetworkPrices, tokens: TokenCounts, reported_total_cost: int | None) -> int:
        """The network's cost of one request it answered, before the markup: its reported cost
        when positive, else worked out from the tokens."""
        if reported_total_cost is not None and reported_total_cost > 0:
            return reported_total_cost
        return network_cost(prices, tokens, self.coefficient)

    def per_token_ceilings(self, prices: NetworkPrices) -> tuple[Fraction, Fraction]:
        """Highest marked-up price of one prompt token and of one completion token."""
        base = Fraction(prices.price_per_token * self.coefficient, COEFFICIENT_ONE * MULTIPLIER_ONE)
        prompt = base * max(prices.prompt_multiplier, prices.cached_multiplier) * self.markup
        completion = base * max(prices.completion_multiplier, prices.reasoning_multiplier) * self.markup
        return prompt, completion

    def worst_case(self, prices: NetworkPrices, prompt_bound: int, max_tokens: int) -> int:
        """Reservation for a request: every prompt and completion token at its dearest type."""
        cached = self._ceilings
        if cached is None or cached[0] is not prices:
            # Per request this runs on every call: keep it to integers, worked out once per price list.
            prompt, completion = self.per_token_ceilings(prices)
            denominator = prompt.denominator * completion.denominator
            cached = self._ceilings = (
                prices,
                prompt.numerator * completion.denominator,
                completion.numerator * prompt.denominator,
                denominator,
            )
        _, prompt_numerator, completion_numerator, denominator = cached
        return -(-(prompt_numerator * prompt_bound + completion_numerator * max_tokens) // denominator)

    def largest_max_tokens(self, prices: NetworkPrices, prompt_bound: int, available: int) -> int:
        """The largest max_tokens whose worst case fits in `available` nanoTON (0 if none)."""
        prompt, completion = self.per_token_ceilings(prices)
        room = available - prompt * prompt_bound
        if room <= 0 or completion == 0:
            return 0
        return int(room // completion)
