"""Run the simulators: `cocoon-simulator --port 10000` (or `cocoon-platform simulate ...`).

One process answers as a COCOON client and, for its own wallet, as toncenter's API v3;
`cocoon-simulator deposit --code CODE --amount-ton 1` injects a deposit into a running one.
The simulator is a tool for development and tests, a package apart from the product.
"""

from __future__ import annotations

import argparse
import sys

from cocoon_platform.ton.address import InvalidAddress, TonAddress
from cocoon_simulator.cocoon import add_arguments, options_from_args, serve
from cocoon_simulator.toncenter import (
    DEFAULT_WALLET,
    ToncenterState,
    add_deposit_arguments,
    build_toncenter_app,
    run_deposit_command,
)


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser)
    parser.add_argument(
        "--wallet", default=DEFAULT_WALLET, help="the wallet whose transactions the toncenter fake serves"
    )


def run_simulate(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
        wallet = TonAddress.parse(args.wallet)
    except (ValueError, InvalidAddress) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    toncenter = build_toncenter_app(ToncenterState(wallet=wallet))
    print(
        f"COCOON client simulator (and toncenter fake for {args.wallet}) on http://{options.host}:{options.port}",
        file=sys.stderr,
        flush=True,
    )
    serve(options, fallback=toncenter)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cocoon-simulator", description=__doc__)
    add_simulate_arguments(parser)
    parser.set_defaults(handler=run_simulate)
    commands = parser.add_subparsers(dest="simulate_command")
    deposit = commands.add_parser("deposit", help="inject a deposit into a running simulator")
    add_deposit_arguments(deposit)
    deposit.set_defaults(handler=run_deposit_command)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
