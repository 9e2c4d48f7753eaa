"""The ASGI app: `uvicorn chat_history_k8s.main:app`. Assembly only: lifespan, handlers, routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from langchain_core.language_models import BaseChatModel

from chat_history_k8s import __version__, gc_tuning
from chat_history_k8s.api import chat, health, sessions
from chat_history_k8s.api.deps import Runtime
from chat_history_k8s.api.openapi import install_openapi
from chat_history_k8s.auth import KeyRing
from chat_history_k8s.config import Settings, get_settings
from chat_history_k8s.conversation import build_conversations
from chat_history_k8s.errors import install_error_handlers
from chat_history_k8s.limits import build_limiter
from chat_history_k8s.metrics import Metrics
from chat_history_k8s.middleware import install_middleware
from chat_history_k8s.model import build_model
from chat_history_k8s.web import install_web

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, model: BaseChatModel | None = None) -> FastAPI:
    """A new app. Settings are read when it starts (override `get_settings` in tests, or pass
    `settings`); the store's clients are built in the lifespan and closed after it. `model`
    replaces the one `CHAT_MODEL` names (tests pass a model that fails or stalls)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        current = settings or app.dependency_overrides.get(get_settings, get_settings)()
        if not logging.getLogger().handlers:  # uvicorn configures only its own loggers
            logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("chat_history_k8s").setLevel(current.log_level)
        metrics = Metrics()
        chat_model = model if model is not None else build_model(current)
        conversations = build_conversations(current, chat_model, metrics)
        metrics.watch_store(conversations)
        keyring = (
            KeyRing(current.auth_api_keys_file, check_seconds=current.auth_reload_check_seconds)
            if current.auth_enabled and current.auth_api_keys_file
            else None
        )
        if keyring is not None:
            metrics.watch_store(keyring)
        limiter = build_limiter(current, conversations.redis_client, metrics)
        app.state.runtime = Runtime(current, conversations, metrics, keyring, limiter)
        logger.info(
            "replica %s ready to serve: api=%s backend=%s version=%s auth=%s limits=%s",
            current.pod_name,
            conversations.api,
            conversations.backend,
            __version__,
            "api-keys" if keyring else "off",
            "on" if limiter else "off",
        )
        try:
            await conversations.start()
            gc_tuning.tune()  # the startup heap is built: freeze it (see gc_tuning)
            yield
        finally:
            await conversations.aclose()

    # /docs and /openapi.json come from chat_history_k8s.web (no CDN, counted by route); no /redoc.
    app = FastAPI(
        title="chat-history",
        version=__version__,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_web(app)  # before install_middleware: its CORS layer goes inside theirs
    install_middleware(app)
    for module in (chat, sessions, health):
        app.include_router(module.router)
    install_openapi(app)
    return app


app = create_app()
