"""Request-scoped access to what the lifespan built, as `Annotated` dependency aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from chat_history_k8s.config import Settings
from chat_history_k8s.conversation import Conversations
from chat_history_k8s.metrics import Metrics


@dataclass(frozen=True)
class Runtime:
    """What one running app owns: built in the lifespan, released after it."""

    settings: Settings
    conversations: Conversations
    metrics: Metrics


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_app_settings(request: Request) -> Settings:
    return get_runtime(request).settings


async def get_conversations(request: Request) -> Conversations:
    return get_runtime(request).conversations


async def get_metrics(request: Request) -> Metrics:
    return get_runtime(request).metrics


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ConversationsDep = Annotated[Conversations, Depends(get_conversations)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
