"""Exact charges: hand-computed from the network formula, the markup and one upward rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cocoon_platform.billing.prices import NetworkPrices, Pricer, TokenCounts, network_cost

MAINNET = NetworkPrices(
    price_per_token=20,
    prompt_multiplier=10000,
    cached_multiplier=1000,
    completion_multiplier=80000,
    reasoning_multiplier=80000,
)


@pytest.mark.parametrize(
    ("tokens", "coefficient", "network", "charge"),
    [
        # prompt 12, completion 45: 20*(12 + 45*8) = 7440; x1.5 = 11160
        (TokenCounts(prompt=12, completion=45), 1000, 7440, 11160),
        # cached 100 of 1000 prompt: 900 + floor(100*0.1)=10 -> 910; + 8*10 = 80 -> 990 * 20 = 19800
        (TokenCounts(prompt=1000, completion=10, cached=100), 1000, 19800, 29700),
        # cached 15: floor(1.5)=1; prompt 15 all cached: 0 + 1; completion 1 -> 8; (1+8)*20 = 180 -> 270
        (TokenCounts(prompt=15, completion=1, cached=15), 1000, 180, 270),
        # reasoning counted at its own multiplier: (3 + 8*(7-2) + 8*2)*20 = 1180 -> 1770
        (TokenCounts(prompt=3, completion=7, reasoning=2), 1000, 1180, 1770),
        # coefficient 1500: floor(3*1.5)=4, floor(1*1.5*8)=12 -> 16*20 = 320 -> 480
        (TokenCounts(prompt=3, completion=1), 1500, 320, 480),
        # one odd nanoTON: 1 prompt token at price 20, coefficient 1050 -> floor(1.05)=1 -> 20 -> 30
        (TokenCounts(prompt=1, completion=0), 1050, 20, 30),
        (TokenCounts(prompt=0, completion=0), 1000, 0, 0),
        # cached and reasoning larger than their totals are clamped, never negative
        (TokenCounts(prompt=5, completion=2, cached=9, reasoning=9), 1000, 20 * (0 + 0 + 0 + 16), 480),
    ],
)
def test_charge_table(tokens: TokenCounts, coefficient: int, network: int, charge: int) -> None:
    assert network_cost(MAINNET, tokens, coefficient) == network
    assert Pricer(Decimal("1.5"), coefficient).charge(MAINNET, tokens, None) == charge


@pytest.mark.parametrize(
    ("markup", "network", "charge"),
    [("1.5", 7, 11), ("1.5", 6, 9), ("1.25", 3, 4), ("1", 9, 9), ("1.333", 1000, 1333), ("2.0000001", 10, 21)],
)
def test_markup_rounds_up_once(markup: str, network: int, charge: int) -> None:
    assert Pricer(Decimal(markup), 1000).marked_up(network) == charge


def test_reported_total_cost_wins_only_when_positive() -> None:
    pricer = Pricer(Decimal("1.5"), 1000)
    tokens = TokenCounts(prompt=12, completion=45)
    assert pricer.charge(MAINNET, tokens, 1001) == 1502
    assert pricer.charge(MAINNET, tokens, 0) == 11160
    assert pricer.charge(MAINNET, tokens, None) == 11160


def test_worst_case_and_largest_max_tokens_agree() -> None:
    pricer = Pricer(Decimal("1.5"), 1000)
    # Every prompt byte at the dearer of prompt/cached (30), every completion token at 240.
    assert pricer.worst_case(MAINNET, prompt_bound=100, max_tokens=1000) == 100 * 30 + 1000 * 240
    available = 70_000_000
    fits = pricer.largest_max_tokens(MAINNET, 100, available)
    assert pricer.worst_case(MAINNET, 100, fits) <= available < pricer.worst_case(MAINNET, 100, fits + 1)
    assert pricer.largest_max_tokens(MAINNET, 10_000_000, available) == 0
    odd = NetworkPrices(7, 10000, 1000, 33333, 80000)
    for coefficient in (1000, 1234):
        odd_pricer = Pricer(Decimal("1.37"), coefficient)
        fits = odd_pricer.largest_max_tokens(odd, 321, 9_999_999)
        assert odd_pricer.worst_case(odd, 321, fits) <= 9_999_999 < odd_pricer.worst_case(odd, 321, fits + 1)
