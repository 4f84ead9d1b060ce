"""Facts about models that the COCOON client doesn't report: owner, endpoint, type, context, and
the tool-call format its chat template was trained on (`hermes` for Qwen3's chat models; None
for a model that cannot be offered tools, such as the Seed-X translator)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CHAT_ENDPOINT = "/v1/chat/completions"
HERMES = "hermes"
TOOL_FORMATS = frozenset((HERMES,))
COMPLETIONS_ENDPOINT = "/v1/completions"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    owned_by: str
    endpoint: str
    type: str  # "chat" or "translation"
    context_window: int | None
    tool_format: str | None = None  # one of TOOL_FORMATS, or None: requests with tools get a 400


BUILT_IN: dict[str, ModelInfo] = {
    "Qwen/Qwen3-32B": ModelInfo("Alibaba", CHAT_ENDPOINT, "chat", 131072, HERMES),
    "ByteDance-Seed/Seed-X-PPO-7B": ModelInfo("ByteDance", COMPLETIONS_ENDPOINT, "translation", 8192),
}

_OWNERS = {
    "qwen": "Alibaba",
    "bytedance": "ByteDance",
    "bytedance-seed": "ByteDance",
    "meta-llama": "Meta",
    "deepseek-ai": "DeepSeek",
    "mistralai": "Mistral AI",
    "google": "Google",
    "openai": "OpenAI",
}


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
        # Qwen3's chat models share one template; Qwen3-Coder's XML calls are another format.
        tool_format=HERMES if "qwen3" in lowered and "coder" not in lowered and not translation else None,
    )


class ModelCatalog:
    def __init__(self, entries: dict[str, ModelInfo]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: str | None) -> ModelCatalog:
        """Built-in entries, extended or overridden by the operator's JSON file:
        `{"org/model": {"owned_by": ..., "endpoint": ..., "type": "chat", "context_window": 32768,
        "tool_format": "hermes"}}` (`"tool_format": null` offers the model no tools)."""
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
                        context_window=(
                            int(fields["context_window"])
                            if fields.get("context_window") is not None
                            else base.context_window
                        ),
                        tool_format=fields.get("tool_format", base.tool_format),
                    )
                except (TypeError, ValueError) as exc:
                    raise CatalogError(f"model catalog {path}: entry {model_id!r}: {exc}") from exc
                if entries[model_id].type not in ("chat", "translation"):
                    raise CatalogError(f"model catalog {path}: {model_id!r} type must be chat or translation")
                tool_format = entries[model_id].tool_format
                if tool_format is not None and tool_format not in TOOL_FORMATS:
                    raise CatalogError(
                        f"model catalog {path}: {model_id!r} tool_format must be "
                        f"{' or '.join(sorted(TOOL_FORMATS))} or null"
                    )
        return cls(entries)

    def info(self, model_id: str) -> ModelInfo:
        return self._entries.get(model_id) or derive(model_id)

    def tool_format(self, model_id: str) -> str | None:
        return self.info(model_id).tool_format
