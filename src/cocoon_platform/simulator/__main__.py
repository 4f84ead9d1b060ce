"""Run the simulators standalone: python -m cocoon_platform.simulator --port 10000.

One process answers as a COCOON client and, for its own wallet, as toncenter's API v3.
"""

from __future__ import annotations

import argparse
import sys

from cocoon_platform.simulator.cocoon import add_arguments, options_from_args, serve
from cocoon_platform.simulator.toncenter import DEFAULT_WALLET, ToncenterState, build_toncenter_app
from cocoon_platform.ton.address import InvalidAddress, TonAddress


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser)
    parser.add_argument("--wallet", default=DEFAULT_WALLET,
                        help="the wallet whose transactions the toncenter fake serves")


def run_simulate(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
        wallet = TonAddress.parse(args.wallet)
    except (ValueError, InvalidAddress) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    toncenter = build_toncenter_app(ToncenterState(wallet=wallet))
    print(f"COCOON client simulator (and toncenter fake for {args.wallet}) on http://{options.host}:{options.port}",
          file=sys.stderr, flush=True)
    serve(options, fallback=toncenter)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocoon_platform.simulator", description=__doc__)
    add_simulate_arguments(parser)
    return run_simulate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
