"""`uvicorn service.main:app` is `uvicorn chat_history_k8s.main:app`: see service/__init__.py."""

from chat_history_k8s.main import app

__all__ = ["app"]
