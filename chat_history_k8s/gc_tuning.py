"""The garbage collector, tuned once per process when the app has started.

A replica's heap after startup is ~175,000 container objects (FastAPI, pydantic, LangChain,
redis-py: modules, classes, schemas) that live as long as the process. CPython's default
collector walks all of them in every full collection, and triggers a young collection every 700
net container allocations; a chat turn allocates hundreds (coroutines, futures, dicts, message
copies), so under load a replica spent a quarter to a third of its CPU in the collector.
Measured side by side (one replica each, wrk at concurrency 16), a Redis turn's CPU went from
1.04 ms to 0.78 ms with the freeze and to 0.66 ms with the threshold as well; a memory turn's
from 0.57 to 0.45 ms with the freeze (docs/benchmarks.md has the HTTP benchmark's
step-by-step figures). `tune()`:

- collects once, then freezes what survived (`gc.freeze()`): the startup objects move to a
  permanent generation that no collection walks again (they are never garbage: modules, the
  app, the store's client);
- raises the young generation's threshold to `YOUNG_THRESHOLD`, so young collections come
  ~14 times less often; each still finds every cycle a request left behind.

Reference cycles are still collected; objects without cycles are freed by reference counting
as always. Only the first call in a process does anything (the test suite builds many apps in
one process: freezing each would keep every one of them forever).
"""

from __future__ import annotations

import gc
import threading

YOUNG_THRESHOLD = 10_000

_lock = threading.Lock()
_tuned = False


def tune() -> bool:
    """Freeze the heap as it is and raise the young threshold; True if this call did it."""
    global _tuned
    with _lock:
        if _tuned:
            return False
        _tuned = True
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return True
