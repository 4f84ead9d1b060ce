"""Configuration of the COCOON client simulator: options, model specs, runtime changes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeGuard

FAULT_MODES: tuple[str, ...] = (
    "no_proxy",
    "no_workers",
    "timeout",
    "wallet_low",
    "hang",
    "cut",
    "stall",
    "bare_json",
    "html_error",
)

# Which COCOON client build's request validator to apply (see cocoon_fields.py).
CLIENT_BUILDS: tuple[str, ...] = ("older", "newer")

# Fields that must hold a non-negative integer (JSON numbers like 3.0 are refused).
_COUNT_FIELDS: tuple[str, ...] = (
    "price_per_token",
    "worker_fee_per_token",
    "prompt_multiplier",
    "cached_multiplier",
    "completion_multiplier",
    "reasoning_multiplier",
    "coefficient",
    "max_running_requests",
    "wallet_balance",
    "prompt_cache_entries",
)
# Where the server listens cannot change while it runs; the access hash is never echoed.
_FIXED_FIELDS: frozenset[str] = frozenset({"host", "port"})
_HIDDEN_FIELDS: tuple[str, ...] = ("host", "port", "access_hash")


@dataclass(frozen=True)
class ModelSpec:
    """One served model; it gets `workers_per_model` workers at its coefficient."""

    id: str
    reasoning: bool = False
    coefficient: int | None = None  # None: SimulatorOptions.coefficient


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("Qwen/Qwen3-32B", reasoning=True),
    ModelSpec("ByteDance-Seed/Seed-X-PPO-7B"),
)


def _is_int(value: object) -> TypeGuard[int]:
    """True for real integers; bool is excluded although it subclasses int."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class SimulatorOptions:
    """Everything the simulator serves; money in nanoTON, multipliers with 10000 = 1.0x."""

    host: str = "127.0.0.1"
    port: int = 10000
    models: list[ModelSpec] = field(default_factory=lambda: list(DEFAULT_MODELS))
    ttft_ms: float = 0.0
    tpt_ms: float = 0.0
    fault: str | None = None
    price_per_token: int = 20
    worker_fee_per_token: int = 1
    prompt_multiplier: int = 10000
    cached_multiplier: int = 1000
    completion_multiplier: int = 80000
    reasoning_multiplier: int = 80000
    coefficient: int = 1000
    max_running_requests: int = 60
    workers_per_model: int = 2
    access_hash: str | None = None
    report_total_cost: bool = True
    # Natural answer length when the prompt carries no [[sim:tokens=N]]: lo..hi, picked by prompt hash.
    default_completion_tokens: tuple[int, int] = (16, 48)
    wallet_balance: int = 500_000_000_000
    prompt_cache_entries: int = 65536  # one entry per message prefix / 64-byte text block
    client_build: str = "older"  # "newer" accepts the newer client's extra fields

    def __post_init__(self) -> None:
        """Reject values the simulator cannot serve (ValueError)."""
        for name in _COUNT_FIELDS:
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        for name in ("ttft_ms", "tpt_ms"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
        if not _is_int(self.workers_per_model) or self.workers_per_model < 1:
            raise ValueError("workers_per_model must be a positive integer")
        if self.fault is not None and self.fault not in FAULT_MODES:
            raise ValueError(f"fault must be one of {', '.join(FAULT_MODES)} or null")
        if self.client_build not in CLIENT_BUILDS:
            raise ValueError(f"client_build must be one of {', '.join(CLIENT_BUILDS)}")
        if not isinstance(self.report_total_cost, bool):
            raise ValueError("report_total_cost must be a boolean")
        if self.access_hash is not None and not isinstance(self.access_hash, str):
            raise ValueError("access_hash must be a string or null")
        lo, hi = self.default_completion_tokens
        if not (_is_int(lo) and _is_int(hi) and 1 <= lo <= hi):
            raise ValueError("default_completion_tokens must be 1 <= lo <= hi")
        _check_models(self.models)


def _check_models(models: list[ModelSpec]) -> None:
    """Models must be ModelSpec values with unique ids and sane coefficients."""
    seen: set[str] = set()
    for spec in models:
        if not isinstance(spec, ModelSpec) or not isinstance(spec.id, str) or not spec.id:
            raise ValueError("models must be model specs with a non-empty id")
        if spec.coefficient is not None and (not _is_int(spec.coefficient) or spec.coefficient < 0):
            raise ValueError(f"coefficient of {spec.id} must be a non-negative integer")
        if spec.id in seen:
            raise ValueError(f"model {spec.id} listed twice")
        seen.add(spec.id)


def parse_token_range(value: object) -> tuple[int, int]:
    """Accept N, "N", "LO-HI" or [LO, HI] as a natural completion length range."""
    if _is_int(value):
        return (value, value)
    if isinstance(value, str):
        lo, sep, hi = value.partition("-")
        try:
            return (int(lo), int(hi)) if sep else (int(lo), int(lo))
        except ValueError:
            raise ValueError(f"bad token range {value!r}") from None
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value):
        return (value[0], value[1])
    raise ValueError(f"bad token range {value!r}")


def _model_from_json(value: object) -> ModelSpec:
    """A model is "id" or {"id": ..., "reasoning": bool, "coefficient": int|null}."""
    if isinstance(value, str):
        return ModelSpec(value)
    if isinstance(value, dict) and set(value) <= {"id", "reasoning", "coefficient"}:
        return ModelSpec(
            id=value.get("id", ""),
            reasoning=bool(value.get("reasoning", False)),
            coefficient=value.get("coefficient"),
        )
    raise ValueError(f"bad model spec {value!r}")


def apply_changes(options: SimulatorOptions, changes: dict[str, Any]) -> SimulatorOptions:
    """Return options with JSON `changes` applied; ValueError names the offending field."""
    names = {f.name for f in dataclasses.fields(SimulatorOptions)} - _FIXED_FIELDS
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"cannot change {', '.join(unknown)}")
    values = dict(changes)
    if "models" in values:
        if not isinstance(values["models"], list):
            raise ValueError("models must be a list")
        values["models"] = [_model_from_json(m) for m in values["models"]]
    if "default_completion_tokens" in values:
        values["default_completion_tokens"] = parse_token_range(values["default_completion_tokens"])
    if values.get("fault") == "none":
        values["fault"] = None
    return dataclasses.replace(options, **values)


def public_config(options: SimulatorOptions) -> dict[str, Any]:
    """Changeable options as JSON for /_sim/config (posting it back is a no-op); no secrets."""
    config = dataclasses.asdict(options)
    for name in _HIDDEN_FIELDS:
        del config[name]
    return config
