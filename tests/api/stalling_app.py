"""The service, settings from the environment, with a model that never answers a turn marked
`[stall]`: such a turn holds its session until its process dies (tests/api/test_replicas.py
SIGKILLs it). Run by uvicorn as `tests.api.stalling_app:app`."""

from chat_history_k8s.main import create_app
from tests.api.models import FlakyModel

app = create_app(model=FlakyModel())
