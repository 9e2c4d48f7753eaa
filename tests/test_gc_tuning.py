"""The collector tuning a replica applies once it has started (chat_history_k8s/gc_tuning.py),
checked in a fresh interpreter: the process-wide state is the point."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import asyncio, gc, json, weakref
from chat_history_k8s import gc_tuning
from chat_history_k8s.main import create_app
from tests.conftest import make_settings

before = {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}

async def start_and_stop():
    app = create_app(make_settings("memory"))
    async with app.router.lifespan_context(app):
        pass

asyncio.run(start_and_stop())

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a reference cycle made after the freeze
gone = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({
    "before": before,
    "threshold": gc.get_threshold()[0],
    "frozen": gc.get_freeze_count(),
    "cycle_collected": gone() is None,
    "second_call_did_something": gc_tuning.tune(),
}))
"""


def test_a_started_app_freezes_its_startup_heap_once_and_still_collects_cycles() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["before"]["frozen"] == 0 and probe["before"]["threshold"] < 10_000
    assert probe["threshold"] == 10_000
    assert probe["frozen"] > 50_000  # the imported framework, not a handful of objects
    assert probe["cycle_collected"] is True
    assert probe["second_call_did_something"] is False
