"""/v1/models and /api/stats: the network as the platform last saw it."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cocoon_platform.deps import StateDep
from cocoon_platform.errors import ModelNotFound, ServiceUnavailable, openapi_responses
from cocoon_platform.state import AppState
from cocoon_platform.upstream.status import NetworkModel

# What /v1/models answers while the COCOON client has not been reachable since start-up.
UNREACHABLE = "The COCOON network is unreachable and no model list is known yet. Try again shortly."

router = APIRouter()

# A request for /v1/models before anything is known waits this long for a first answer.
FIRST_FETCH_BOUND = 2.0
STATS_BOUND = 0.5


class WorkerOut(BaseModel):
    running_requests: int
    max_running_requests: int
    coefficient: int


class ModelOut(BaseModel):
    id: str = Field(description="Model identifier to use in completions.")
    object: str = "model"
    created: int = 0
    owned_by: str = Field(description="Organization that created the model.")
    endpoint: str = Field(description="API endpoint to use for this model.")
    type: str = Field(description="'chat' for conversational models, 'translation' for translation models.")
    context_window: int | None = Field(description="Maximum context window in tokens.")
    workers: list[WorkerOut] = Field(description="Worker nodes serving this model.")


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelOut]


class ModelStats(BaseModel):
    id: str
    workers: int
    running: int
    capacity: int
    load_pct: float


class NetworkStats(BaseModel):
    models: list[ModelStats]
    status: str = Field(description="'online' = fresh data, 'cached' = stale but last known, 'offline' = no data.")
    cached_at: datetime | None


async def _known_models(state: AppState) -> list[NetworkModel]:
    network = state.network
    if network.models is None:
        await network.refresh_once(FIRST_FETCH_BOUND)
    if network.models is None:
        raise ServiceUnavailable(UNREACHABLE)
    return network.models


def _model_out(state: AppState, model: NetworkModel, model_id: str) -> ModelOut:
    info = state.catalog.info(model.id)
    return ModelOut(
        id=model_id,
        owned_by=info.owned_by,
        endpoint=info.endpoint,
        type=info.type,
        context_window=info.context_window,
        workers=[
            WorkerOut(
                running_requests=w.running_requests,
                max_running_requests=w.max_running_requests,
                coefficient=w.coefficient,
            )
            for w in model.workers
        ],
    )


@router.get(
    "/v1/models",
    response_model=ModelList,
    tags=["AI Inference"],
    summary="List available AI models",
    responses=openapi_responses(ServiceUnavailable(UNREACHABLE)),
)
async def list_models(state: StateDep) -> ModelList:
    """Models on the network with their workers' load; the last known list while the upstream is away.
    Each model is listed again under its alias (`qwen3-32b` for `Qwen/Qwen3-32B`), after the ids."""
    models = await _known_models(state)
    data = [_model_out(state, model, model.id) for model in models]
    by_id = {model.id: model for model in models}
    data.extend(
        _model_out(state, by_id[model_id], alias)
        for alias, model_id in state.network.aliases.items()
        if model_id in by_id
    )
    return ModelList(data=data)


@router.get(
    "/v1/models/{model:path}",
    response_model=ModelOut,
    tags=["AI Inference"],
    summary="Retrieve a model",
    responses=openapi_responses(ModelNotFound("No such model on the network"), ServiceUnavailable(UNREACHABLE)),
)
async def retrieve_model(model: str, state: StateDep) -> ModelOut:
    """One model by its id (which holds a `/`) or its alias."""
    models = await _known_models(state)
    model_id = state.network.canonical(model)
    for known in models:
        if known.id == model_id:
            return _model_out(state, known, model)
    raise ModelNotFound(f"The model '{model}' does not exist on the COCOON network. See GET /v1/models.", param="model")


@router.get("/api/stats", response_model=NetworkStats, tags=["Network"], summary="Get live network statistics")
async def network_stats(state: StateDep) -> NetworkStats:
    """Always 200: 'online' when fresh, 'cached' when stale, 'offline' when nothing is known."""
    network = state.network
    if network.state() != "online":
        await network.refresh_once(STATS_BOUND)
    models = []
    for model in network.models or []:
        running = sum(w.running_requests for w in model.workers)
        capacity = sum(w.max_running_requests for w in model.workers)
        models.append(
            ModelStats(
                id=model.id,
                workers=len(model.workers),
                running=running,
                capacity=capacity,
                load_pct=round(100 * running / capacity, 1) if capacity else 0.0,
            )
        )
    cached_at = datetime.fromtimestamp(network.models_at, UTC) if network.models_at else None
    return NetworkStats(models=models, status=network.state(), cached_at=cached_at)
