"""Compatibility shim: `uvicorn service.main:app` (the start command in DESIGN.md) keeps working.

The service's code lives in `chat_history_k8s`, an import name that cannot collide with someone
else's `service` package. This shim is not part of the wheel: it works from a checkout of this
repository (uvicorn puts the working directory on `sys.path`) and from the image, whose working
directory holds it. New code imports `chat_history_k8s`.
"""
