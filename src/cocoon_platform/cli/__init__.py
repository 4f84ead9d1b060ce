"""The `cocoon-platform` command.

Each command lives in a module of this package (serve.py, admin.py, deposits.py), or beside the
feature it drives (accounts/cli.py: `admin keys`; agents/stdio.py: `mcp`), and registers itself
on the parser built here. They share cli/common.py, never this module, so importing a command
never imports the parser. Heavy imports wait inside the handlers: `--help` and `mcp` start fast,
and `simulate` loads the simulator (a package apart) only when asked for.
"""

from __future__ import annotations

import argparse
import sys

from cocoon_platform.cli.admin import register_admin
from cocoon_platform.cli.common import CommandError
from cocoon_platform.cli.deposits import register_deposits, register_watch
from cocoon_platform.cli.serve import register_serve


def run_simulator(argv: list[str]) -> int:
    from cocoon_simulator.__main__ import main as simulate

    return simulate(argv)


def build_parser() -> argparse.ArgumentParser:
    from cocoon_platform.accounts.cli import register_keys
    from cocoon_platform.agents.stdio import register_mcp

    parser = argparse.ArgumentParser(prog="cocoon-platform", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    register_serve(commands)
    register_watch(commands)
    register_mcp(commands)

    # The simulator is a development tool in a package of its own: imported only when asked for.
    simulate = commands.add_parser(
        "simulate",
        add_help=False,
        help="run a COCOON-client simulator with a toncenter fake (for development and tests; see --help)",
    )
    simulate.add_argument("arguments", nargs=argparse.REMAINDER)

    admin = commands.add_parser("admin", help="operator commands").add_subparsers(dest="admin", required=True)
    register_admin(admin)
    register_deposits(admin)
    register_keys(admin)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # the simulator parses its own arguments, --help included
        return run_simulator(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CommandError as exc:
        print(f"cocoon-platform: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
