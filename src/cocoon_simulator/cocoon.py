"""A fast, faithful simulator of a COCOON client's local HTTP API.

Public API: SimulatorOptions, ModelSpec, build_app, serve, add_arguments, options_from_args.
Requests can steer it with markers in their prompt text: [[sim:tokens=N]] (answer length,
last user message), [[sim:calls=N]] (tool calls when tools are offered, last user message),
[[sim:fault=<mode>|none]] (with [[sim:fault_attempt=N]]: only on the Nth arrival of the same
request body, e.g. a retry), [[sim:cost=0]] and [[sim:overcount=N]] (the usage reports N times
the completion and its cost); or with header X-Sim-Fault. Chat requests with
`n`, `stop`, `response_format` or tools in the system prompt get answers planned as vLLM serving
Qwen3 gives them (cocoon_script.py).
"""

from __future__ import annotations

import argparse
import importlib.util

from cocoon_simulator.cocoon_app import ASGIApp, SimulatorApp, hide_cut_tracebacks
from cocoon_simulator.cocoon_options import (
    CLIENT_BUILDS,
    DEFAULT_MODELS,
    FAULT_MODES,
    ModelSpec,
    SimulatorOptions,
    parse_token_range,
)

__all__ = [
    "ASGIApp",
    "DEFAULT_MODELS",
    "FAULT_MODES",
    "ModelSpec",
    "SimulatorOptions",
    "add_arguments",
    "build_app",
    "options_from_args",
    "serve",
]

_SHUTDOWN_GRACE_S = 1  # hung requests ("hang" fault) must not block shutdown forever


def build_app(options: SimulatorOptions, fallback: ASGIApp | None = None) -> ASGIApp:
    """The simulator as an ASGI app; paths it does not serve go to `fallback` (else 404)."""
    hide_cut_tracebacks()
    return SimulatorApp(options, fallback)


def serve(options: SimulatorOptions, fallback: ASGIApp | None = None) -> None:
    """Run the simulator under uvicorn until interrupted (on uvloop when installed)."""
    import uvicorn  # only serving needs the server

    from cocoon_platform.server import HttpProtocol

    uvicorn.run(
        build_app(options, fallback),
        host=options.host,
        port=options.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=HttpProtocol,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=_SHUTDOWN_GRACE_S,
    )


def _count(text: str) -> int:
    """argparse type: a non-negative integer."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive(text: str) -> int:
    """argparse type: a positive integer."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _millis(text: str) -> float:
    """argparse type: a non-negative number of milliseconds."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _token_range(text: str) -> tuple[int, int]:
    """argparse type: N or LO-HI."""
    try:
        lo, hi = parse_token_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError("need 1 <= LO <= HI")
    return lo, hi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's command-line flags (defaults come from SimulatorOptions)."""
    d = SimulatorOptions()
    parser.add_argument("--host", default=d.host, help="listen address (default %(default)s)")
    parser.add_argument("--port", type=int, default=d.port, help="listen port (default %(default)s)")
    parser.add_argument("--ttft-ms", type=_millis, default=d.ttft_ms, help="time to first token")
    parser.add_argument("--tpt-ms", type=_millis, default=d.tpt_ms, help="time per further token")
    parser.add_argument("--fault", choices=FAULT_MODES, default=None, help="fault for every request")
    parser.add_argument("--price-per-token", type=_count, default=d.price_per_token, help="nanoTON")
    parser.add_argument("--worker-fee-per-token", type=_count, default=d.worker_fee_per_token)
    parser.add_argument("--prompt-multiplier", type=_count, default=d.prompt_multiplier, help="10000 = 1.0x")
    parser.add_argument("--cached-multiplier", type=_count, default=d.cached_multiplier)
    parser.add_argument("--completion-multiplier", type=_count, default=d.completion_multiplier)
    parser.add_argument("--reasoning-multiplier", type=_count, default=d.reasoning_multiplier)
    parser.add_argument("--coefficient", type=_count, default=d.coefficient, help="worker price, 1000 = 1.0x")
    parser.add_argument("--max-running-requests", type=_count, default=d.max_running_requests)
    parser.add_argument("--workers-per-model", type=_positive, default=d.workers_per_model)
    parser.add_argument("--access-hash", default=None, help="require ?access_hash= on /jsonstats and /stats")
    parser.add_argument("--no-total-cost", action="store_true", help="report all cost fields as 0")
    parser.add_argument("--model", action="append", metavar="ID", help="serve this model (repeatable)")
    parser.add_argument(
        "--reasoning-model", action="append", metavar="ID", help="serve this thinking model (repeatable)"
    )
    parser.add_argument(
        "--completion-tokens",
        type=_token_range,
        default=d.default_completion_tokens,
        metavar="N|LO-HI",
        help="natural answer length without a [[sim:tokens=N]] marker (default 16-48)",
    )
    parser.add_argument("--wallet-balance", type=_count, default=d.wallet_balance, help="nanoTON")
    parser.add_argument(
        "--client-build",
        choices=CLIENT_BUILDS,
        default=d.client_build,
        help="whose request validator to apply: the older, stricter build (default) or the newer",
    )


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    """SimulatorOptions from parsed flags; --model/--reasoning-model replace the default models."""
    models = [ModelSpec(m) for m in args.model or []]
    models += [ModelSpec(m, reasoning=True) for m in args.reasoning_model or []]
    return SimulatorOptions(
        host=args.host,
        port=args.port,
        models=models or list(DEFAULT_MODELS),
        ttft_ms=args.ttft_ms,
        tpt_ms=args.tpt_ms,
        fault=args.fault,
        price_per_token=args.price_per_token,
        worker_fee_per_token=args.worker_fee_per_token,
        prompt_multiplier=args.prompt_multiplier,
        cached_multiplier=args.cached_multiplier,
        completion_multiplier=args.completion_multiplier,
        reasoning_multiplier=args.reasoning_multiplier,
        coefficient=args.coefficient,
        max_running_requests=args.max_running_requests,
        workers_per_model=args.workers_per_model,
        access_hash=args.access_hash,
        report_total_cost=not args.no_total_cost,
        default_completion_tokens=args.completion_tokens,
        wallet_balance=args.wallet_balance,
        client_build=args.client_build,
    )
