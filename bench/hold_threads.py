"""A process that holds conversations in memory, for the checkpoint benchmark's RSS figure.

    python -m bench.hold_threads checkpointer THREADS TURNS   # InMemorySaver + create_agent
    python -m bench.hold_threads history THREADS TURNS        # the service's MemoryStore

It does one turn on a throwaway thread and deletes it (imports and first-call caches paid),
prints `warm`, and waits for SIGUSR1 so that the parent can read its resident memory; then it
runs TURNS turns on each of THREADS threads (round robin, as traffic interleaves them), prints
`held <messages> <serialized bytes>` and waits to be stopped. The memory store has the service's
default bounds (they hold 1,000 threads x 100 messages); InMemorySaver has none.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys

from langchain_core.messages import HumanMessage

from bench.checkpointers import (
    WINDOW,
    make_agent,
    thread_config,
    user_text,
)
from chat_history_k8s.config import Settings
from chat_history_k8s.history.memory import MemoryStore
from chat_history_k8s.model import BuiltinChatModel
from testsupport.inmemory_saver import inmemory_bytes


async def hold(kind: str, threads: int, turns: int) -> tuple[int, int]:
    if kind == "checkpointer":
        from langgraph.checkpoint.memory import InMemorySaver

        saver = InMemorySaver()
        agent = make_agent(saver)

        async def turn(thread: str, text: str) -> None:
            await agent.ainvoke({"messages": [HumanMessage(content=text)]}, thread_config(thread))

        async def forget(thread: str) -> None:
            await saver.adelete_thread(thread)

    else:
        settings = Settings()
        store = MemoryStore(
            max_sessions=settings.memory_max_sessions,
            max_messages=settings.history_max_messages,
            ttl_seconds=settings.history_ttl_seconds,
            max_total_messages=settings.memory_max_messages,
        )
        model = BuiltinChatModel()

        async def turn(thread: str, text: str) -> None:
            history = store.history(thread)
            window = await history.aget_window(WINDOW)
            human = HumanMessage(content=text)
            await history.aappend_turn([human, await model.ainvoke([*window, human])])

        async def forget(thread: str) -> None:
            store.clear(thread)

    await turn("warm", user_text("warm", 0))
    await forget("warm")
    gc.collect()
    print("warm", flush=True)
    signal.sigwait({signal.SIGUSR1})
    for t in range(turns):
        for k in range(threads):
            await turn(f"hold-{k}", user_text(f"hold-{k}", t))
    gc.collect()
    if kind == "checkpointer":
        held = 0
        for k in range(threads):
            state = await agent.aget_state(thread_config(f"hold-{k}"))
            held += len(state.values["messages"])
        return held, inmemory_bytes(saver)
    return store.message_count, 0


def main(argv: list[str]) -> int:
    kind, threads, turns = argv[0], int(argv[1]), int(argv[2])
    if kind not in ("checkpointer", "history"):
        print(f"unknown kind {kind!r}: checkpointer or history", file=sys.stderr)
        return 2
    # Blocked before `warm` is printed, so the parent's SIGUSR1 is never lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    held, serialized = asyncio.run(hold(kind, threads, turns))
    print(f"held {held} {serialized}", flush=True)
    signal.pause()  # until the parent stops it
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
