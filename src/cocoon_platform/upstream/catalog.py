"""Facts about models that the COCOON client doesn't report: owner, endpoint, type, context."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETIONS_ENDPOINT = "/v1/completions"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    owned_by: str
    endpoint: str
    type: str  # "chat" or "translation"
    context_window: int | None


BUILT_IN: dict[str, ModelInfo] = {
    "Qwen/Qwen3-32B": ModelInfo("Alibaba", CHAT_ENDPOINT, "chat", 131072),
    "ByteDance-Seed/Seed-X-PPO-7B": ModelInfo("ByteDance", COMPLETIONS_ENDPOINT, "translation", 8192),
}

_OWNERS = {"qwen": "Alibaba", "bytedance": "ByteDance", "bytedance-seed": "ByteDance", "meta-llama": "Meta",
           "deepseek-ai": "DeepSeek", "mistralai": "Mistral AI", "google": "Google", "openai": "OpenAI"}


class CatalogError(ValueError):
    pass


def derive(model_id: str) -> ModelInfo:
    """Sensible facts for a model the catalog doesn't know."""
    org = model_id.split("/", 1)[0] if "/" in model_id else ""
    owner = _OWNERS.get(org.lower(), org or "unknown")
    lowered = model_id.lower()
    translation = "seed-x" in lowered or "translat" in lowered
    return ModelInfo(
        owned_by=owner,
        endpoint=COMPLETIONS_ENDPOINT if translation else CHAT_ENDPOINT,
        type="translation" if translation else "chat",
        context_window=None,
    )


class ModelCatalog:
    def __init__(self, entries: dict[str, ModelInfo]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: str | None) -> ModelCatalog:
        """Built-in entries, extended or overridden by the operator's JSON file:
        `{"org/model": {"owned_by": ..., "endpoint": ..., "type": "chat", "context_window": 32768}}`."""
        entries = dict(BUILT_IN)
        if path:
            try:
                raw = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise CatalogError(f"cannot read model catalog {path}: {exc}") from exc
            if not isinstance(raw, dict):
                raise CatalogError(f"model catalog {path} must be a JSON object keyed by model id")
            for model_id, fields in raw.items():
                base = entries.get(model_id) or derive(model_id)
                if not isinstance(fields, dict):
                    raise CatalogError(f"model catalog {path}: entry {model_id!r} must be an object")
                try:
                    entries[model_id] = ModelInfo(
                        owned_by=str(fields.get("owned_by", base.owned_by)),
                        endpoint=str(fields.get("endpoint", base.endpoint)),
                        type=str(fields.get("type", base.type)),
                        context_window=(int(fields["context_window"]) if fields.get("context_window") is not None
                                        else base.context_window),
                    )
                except (TypeError, ValueError) as exc:
                    raise CatalogError(f"model catalog {path}: entry {model_id!r}: {exc}") from exc
                if entries[model_id].type not in ("chat", "translation"):
                    raise CatalogError(f"model catalog {path}: {model_id!r} type must be chat or translation")
        return cls(entries)

    def info(self, model_id: str) -> ModelInfo:
        return self._entries.get(model_id) or derive(model_id)
