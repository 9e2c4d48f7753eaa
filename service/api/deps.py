"""Request-scoped access to what the lifespan built, as `Annotated` dependency aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from langchain_core.language_models import BaseChatModel

from service.config import Settings
from service.history import HistoryStore
from service.metrics import Metrics


@dataclass(frozen=True)
class Runtime:
    """What one running app owns: built in the lifespan, released after it."""

    settings: Settings
    store: HistoryStore
    model: BaseChatModel
    metrics: Metrics


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_app_settings(request: Request) -> Settings:
    return get_runtime(request).settings


async def get_store(request: Request) -> HistoryStore:
    return get_runtime(request).store


async def get_model(request: Request) -> BaseChatModel:
    return get_runtime(request).model


async def get_metrics(request: Request) -> Metrics:
    return get_runtime(request).metrics


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[HistoryStore, Depends(get_store)]
ModelDep = Annotated[BaseChatModel, Depends(get_model)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
