"""The conversation each peer of the checkpoint benchmark holds, and how each is measured.

A *peer* runs one chat turn on a thread (`turn`), says what it stores for a thread
(`footprint`) and what it has done so far (`counters`). The agents are the service's
conversation: `create_agent` with the built-in model and no tools, as LangChain's docs show
(every message of the thread goes to the model; no trimming middleware). The baseline is the
service's message-history path: `aget_window(20)`, the model, `aappend_turn`.

Every store runs without waiting for its disk (redis-server without AOF, PostgreSQL with
`fsync=off`, SQLite with `synchronous=OFF`): the benchmark measures the software, not this
machine's disk.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar

import aiosqlite
import psycopg
import redis.asyncio as aredis
from langchain.agents import AgentState, create_agent
from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph.message import _messages_delta_reducer
from langgraph.graph.state import CompiledStateGraph

from bench.counting import WireStats, acounted
from chat_history_k8s.checkpoint import RedisCheckpointSaver
from chat_history_k8s.checkpoint.layout import ThreadKeys
from chat_history_k8s.config import Settings
from chat_history_k8s.history.redis import RedisChatHistory
from chat_history_k8s.model import BuiltinChatModel
from testsupport.inmemory_saver import inmemory_bytes, inmemory_thread_bytes

Agent = CompiledStateGraph[Any, Any, Any, Any]

WINDOW = Settings.model_fields["history_window_messages"].default  # 20
TTL_SECONDS = Settings.model_fields["history_ttl_seconds"].default  # 7 days
CAP = 1_000_000  # the history keeps the whole conversation, as the checkpointers do
REDIS_PREFIX = "bench:ckpt:"
HISTORY_PREFIX = "bench:history:"

LABELS = {
    "history": "this project: RedisChatHistory (message-history path)",
    "redis": "this project: RedisCheckpointSaver",
    "memory": "LangGraph InMemorySaver",
    "sqlite": "AsyncSqliteSaver (langgraph-checkpoint-sqlite)",
    "postgres": "AsyncPostgresSaver (langgraph-checkpoint-postgres)",
    "redis_delta": "RedisCheckpointSaver, unbounded, messages as DeltaChannel",
}

# Ordinary words, so that stored text compresses about as well as real text does (PostgreSQL
# compresses large values; Redis and SQLite store them as they are).
_VOCABULARY = (
    "the a retention policy chat logs EU users region export pipeline deleted session audit "
    "window tenant ticket sign-off team data protection keep conversation history seven "
    "days after last message sliding expiry cap each thousand messages applies every "
    "included through same need longer raise only but that and with for from about what "
    "whether we decided remind could you please check again tomorrow morning report numbers "
    "before meeting latency budget replica restart cluster node primary failover backup "
    "restore"
)
_WORDS = _VOCABULARY.split()


def user_text(thread: str, turn: int) -> str:
    """The user's message of `turn` on `thread`: about 200 characters of ordinary words."""
    rng = random.Random(f"{thread}/{turn}")
    words: list[str] = [f"#{turn}"]
    while sum(len(w) + 1 for w in words) < 200:
        words.append(rng.choice(_WORDS))
    return " ".join(words)[:200]


def make_agent(checkpointer: BaseCheckpointSaver[Any], *, delta: bool = False) -> Agent:
    """The service's conversation: `create_agent`, the built-in model, no tools; with `delta`
    its messages channel is LangGraph's (beta) `DeltaChannel`."""
    if delta:
        return create_agent(
            BuiltinChatModel(), tools=[], checkpointer=checkpointer, state_schema=DeltaState
        )
    return create_agent(BuiltinChatModel(), tools=[], checkpointer=checkpointer)


class DeltaState(AgentState[Any]):
    """`create_agent`'s state with the messages stored as deltas (snapshot every 100 updates)."""

    messages: Annotated[list[AnyMessage], DeltaChannel(_messages_delta_reducer)]


def thread_config(thread: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread}}


# -- peers -------------------------------------------------------------------------------------
class Peer(ABC):
    """One way to hold a conversation: `turn` runs one chat turn on a thread, `footprint` is
    the bytes stored for a thread — or, when `footprint_is_total`, the size of the whole store
    (the caller takes its difference around writing threads) — and `counters` what the store's
    witnesses have counted so far."""

    name: ClassVar[str]
    footprint_is_total: ClassVar[bool] = False

    async def open(self) -> None:  # noqa: B027 - most peers need nothing
        pass

    async def close(self) -> None:  # noqa: B027 - most peers need nothing
        pass

    @asynccontextmanager
    async def counting(self) -> AsyncIterator[None]:
        """Around the turns whose counters are compared (a peer may steady its witnesses)."""
        yield

    @abstractmethod
    async def turn(self, thread: str, text: str) -> None: ...

    @abstractmethod
    async def footprint(self, thread: str) -> int: ...

    @abstractmethod
    async def counters(self) -> dict[str, float]:
        """Cumulative counts: `round_trips`, `statements`, `bytes_written`, as measurable."""


class AgentPeer(Peer):
    agent: Agent

    async def turn(self, thread: str, text: str) -> None:
        await self.agent.ainvoke({"messages": [HumanMessage(content=text)]}, thread_config(thread))


class RedisPeer(AgentPeer):
    """This project's saver, configured like the service (sliding TTL, default retention) and
    used like the service: every turn inside the thread's lease (2 of its round trips)."""

    name = "redis"
    max_checkpoints = 4
    delta = False

    def __init__(self, url: str) -> None:
        self.wire = WireStats()
        self.client = acounted(aredis.Redis.from_url(url, socket_timeout=30), self.wire)
        self.saver: RedisCheckpointSaver = RedisCheckpointSaver(
            async_client=self.client,
            key_prefix=REDIS_PREFIX + self.name + ":",
            max_checkpoints=self.max_checkpoints,
            ttl_seconds=TTL_SECONDS,
        )
        self.agent = make_agent(self.saver, delta=self.delta)

    async def close(self) -> None:
        await self.client.aclose()

    async def turn(self, thread: str, text: str) -> None:
        async with self.saver.alease(thread) as lease:
            await self.agent.ainvoke({"messages": [HumanMessage(content=text)]}, lease.config())

    async def footprint(self, thread: str) -> int:
        keys = ThreadKeys(self.saver.settings.prefix, thread).all
        return sum([int(await self.client.memory_usage(k, samples=0) or 0) for k in keys])

    async def counters(self) -> dict[str, float]:
        return {
            "round_trips": self.wire.round_trips,
            "bytes_written": self.wire.bytes_sent,
            "bytes_read": self.wire.bytes_read,
        }


class RedisDeltaPeer(RedisPeer):
    """The same saver unbounded (retention would drop the ancestors a DeltaChannel is rebuilt
    from), the agent's messages channel a DeltaChannel."""

    name = "redis_delta"
    max_checkpoints = 0
    delta = True


class MemoryPeer(AgentPeer):
    name = "memory"

    def __init__(self) -> None:
        self.saver: InMemorySaver = InMemorySaver()
        self.agent = make_agent(self.saver)

    async def footprint(self, thread: str) -> int:
        return inmemory_thread_bytes(self.saver, thread)

    async def counters(self) -> dict[str, float]:
        return {"bytes_written": inmemory_bytes(self.saver)}


class SqlitePeer(AgentPeer):
    """AsyncSqliteSaver on a file of its own (WAL, as the saver sets it up)."""

    name = "sqlite"
    footprint_is_total = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.statements = 0
        self.tracing = True

    async def open(self) -> None:
        self.conn = await aiosqlite.connect(str(self.path))
        self.saver: AsyncSqliteSaver = AsyncSqliteSaver(self.conn)
        await self.saver.setup()
        await self.conn.execute("PRAGMA synchronous=OFF")
        await self.conn.set_trace_callback(self._traced)
        self.agent = make_agent(self.saver)

    def _traced(self, statement: str) -> None:
        self.statements += self.tracing

    async def close(self) -> None:
        await self.conn.close()

    async def footprint(self, thread: str) -> int:
        """Pages in use once the WAL is folded into the database file."""
        async with self.saver.lock:
            self.tracing = False
            await self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = await self._pragma("page_count") - await self._pragma("freelist_count")
            size = pages * await self._pragma("page_size")
            self.tracing = True
        return size

    async def _pragma(self, name: str) -> int:
        async with self.conn.execute(f"PRAGMA {name}") as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    @asynccontextmanager
    async def counting(self) -> AsyncIterator[None]:
        """The WAL emptied and its automatic checkpoints paused, so that its growth is what the
        counted turns wrote (pages, as PostgreSQL's WAL counts them)."""
        async with self.saver.lock:
            self.tracing = False
            await self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await self.conn.execute("PRAGMA wal_autocheckpoint=0")
            self.tracing = True
        try:
            yield
        finally:
            async with self.saver.lock:
                self.tracing = False
                await self.conn.execute("PRAGMA wal_autocheckpoint=1000")  # SQLite's default
                self.tracing = True

    async def counters(self) -> dict[str, float]:
        wal = self.path.with_name(self.path.name + "-wal")
        return {"statements": self.statements, "bytes_written": wal.stat().st_size}


class PostgresPeer(AgentPeer):
    """AsyncPostgresSaver as its docs show (`from_conn_string`, `setup()`), one connection."""

    name = "postgres"
    footprint_is_total = True
    TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self) -> None:
        self.admin = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        await self.admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self._saver_cm = AsyncPostgresSaver.from_conn_string(self.dsn)
        self.saver: AsyncPostgresSaver = await self._saver_cm.__aenter__()
        await self.saver.setup()
        self.agent = make_agent(self.saver)

    async def close(self) -> None:
        await self._saver_cm.__aexit__(None, None, None)
        await self.admin.close()

    async def footprint(self, thread: str) -> int:
        """The checkpoint tables with their indexes and TOAST (pg_total_relation_size)."""
        cursor = await self.admin.execute(
            "SELECT sum(pg_total_relation_size(t::regclass))::bigint FROM unnest(%s::text[]) t",
            (list(self.TABLES),),
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def counters(self) -> dict[str, float]:
        """Statements the server ran for the saver (pg_stat_statements, this query left out) and
        the WAL it wrote (pg_current_wal_insert_lsn: exact, not page-granular)."""
        cursor = await self.admin.execute(
            "SELECT (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            "        WHERE query NOT LIKE '%pg_stat_statements%'"
            "          AND query NOT LIKE '%pg_total_relation_size%')::bigint,"
            " pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
        )
        row = await cursor.fetchone()
        assert row is not None
        return {"statements": int(row[0]), "bytes_written": int(row[1])}


class HistoryPeer(Peer):
    """The message-history path: the service's chat handler without HTTP."""

    name = "history"

    def __init__(self, url: str) -> None:
        self.wire = WireStats()
        self.client = acounted(aredis.Redis.from_url(url, socket_timeout=30), self.wire)
        self.model = BuiltinChatModel()

    def history(self, thread: str) -> RedisChatHistory:
        return RedisChatHistory(
            thread,
            async_client=self.client,
            key_prefix=HISTORY_PREFIX,
            max_messages=CAP,
            ttl_seconds=TTL_SECONDS,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def turn(self, thread: str, text: str) -> None:
        history = self.history(thread)
        window = await history.aget_window(WINDOW)
        human = HumanMessage(content=text)
        ai = await self.model.ainvoke([*window, human])
        await history.aappend_turn([human, ai])

    async def footprint(self, thread: str) -> int:
        return int(await self.client.memory_usage(HISTORY_PREFIX + thread, samples=0) or 0)

    async def counters(self) -> dict[str, float]:
        return {
            "round_trips": self.wire.round_trips,
            "bytes_written": self.wire.bytes_sent,
            "bytes_read": self.wire.bytes_read,
        }
