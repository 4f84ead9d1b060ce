"""Exact charges: hand-computed from the network formula, the markup and one upward rounding."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from cocoon_platform.billing.cost import Attempt, Bill, Delivered, UsageStatus, bill
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
    pricer = Pricer(Decimal("1.5"), coefficient)
    assert pricer.marked_up(pricer.cost(MAINNET, tokens, None)) == charge


@pytest.mark.parametrize(
    ("markup", "network", "charge"),
    [("1.5", 7, 11), ("1.5", 6, 9), ("1.25", 3, 4), ("1", 9, 9), ("1.333", 1000, 1333), ("2.0000001", 10, 21)],
)
def test_markup_rounds_up_once(markup: str, network: int, charge: int) -> None:
    assert Pricer(Decimal(markup), 1000).marked_up(network) == charge


def test_reported_total_cost_wins_only_when_positive() -> None:
    pricer = Pricer(Decimal("1.5"), 1000)
    tokens = TokenCounts(prompt=12, completion=45)
    assert pricer.cost(MAINNET, tokens, 1001) == 1001
    assert pricer.marked_up(pricer.cost(MAINNET, tokens, 1001)) == 1502
    assert pricer.cost(MAINNET, tokens, 0) == pricer.cost(MAINNET, tokens, None) == 7440
    assert pricer.marked_up(7440) == 11160


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


def test_both_attempts_of_a_retried_request_are_billed_each_by_the_rules() -> None:
    """A second attempt adds what it generated to the first's bill however either ended; an
    attempt that never reported its prompt is billed the other's count; the network costs are
    added (each reported, or worked out from its tokens) and marked up once."""
    pricer = Pricer(Decimal("1.5"), 1000)
    reported = {"prompt_tokens": 10, "completion_tokens": 4, "total_cost": 1000}
    four, three = Delivered(4, 0, 20), Delivered(3, 0, 12)

    def never() -> int:
        raise AssertionError("a reported prompt is not estimated")

    def charge(usage: dict[str, object] | None, earlier: Attempt, estimate: Callable[[], int] = never) -> Bill:
        status = UsageStatus.OK if usage else UsageStatus.UPSTREAM_CUT
        return bill(pricer, MAINNET, status, usage, three, estimate, earlier)

    # Exact first (1000) + the cut second: 10 prompt (the first's) + 3 completion = (10 + 24) * 20.
    assert charge(None, Attempt(reported, four)) == Bill(TokenCounts(20, 7), 2520, True)
    # The first without a cost of its own: (10 + 32) * 20 = 840, + 680.
    assert charge(None, Attempt({**reported, "total_cost": 0}, four)) == Bill(TokenCounts(20, 7), 2280, True)
    # The second reported, the first never did: its prompt is the second's count.
    second = {"prompt_tokens": 10, "completion_tokens": 3, "total_cost": 500}
    assert charge(second, Attempt(None, four)) == Bill(TokenCounts(20, 7), 2010, True)  # 840 + 500
    # Both whole: their reports added; neither reported: the prompt estimated, for each.
    assert charge(second, Attempt(reported, four)) == Bill(TokenCounts(20, 7), 2250, False)
    assert charge(None, Attempt(None, four), lambda: 7) == Bill(TokenCounts(14, 7), 2100, True)
    # Without an earlier attempt nothing changes: one attempt, one bill.
    assert bill(pricer, MAINNET, UsageStatus.UPSTREAM_CUT, None, three, lambda: 10) == Bill(
        TokenCounts(10, 3), 1020, True
    )
