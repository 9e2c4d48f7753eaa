"""Checkpointer fixtures: savers on the shared redis-server or a local Redis Cluster, and a real
`create_agent` conversation driven by the built-in model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis
from langchain.agents import create_agent
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from chat_history_k8s.checkpoint import RedisCheckpointSaver
from chat_history_k8s.model import BuiltinChatModel
from testsupport import LocalRedisCluster

Agent = CompiledStateGraph[Any, Any, Any, Any]


def make_agent(checkpointer: BaseCheckpointSaver[Any]) -> Agent:
    """The service's conversation: `create_agent` with the built-in model and no tools."""
    return create_agent(BuiltinChatModel(), tools=[], checkpointer=checkpointer)


def user_text(i: int) -> str:
    """A 200-character user message, as in the issue's measurements."""
    return f"message {i}: ".ljust(200, "x")


async def say(agent: Agent, config: RunnableConfig, text: str) -> list[BaseMessage]:
    """One turn; the thread's messages after it."""
    state = await agent.ainvoke({"messages": [HumanMessage(content=text)]}, config)
    messages: list[BaseMessage] = state["messages"]
    return messages


def thread(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def stored_bytes(client: redis.Redis, prefix: str = "chat-history:ckpt:") -> int:
    """What Redis spends on the keys under `prefix` (MEMORY USAGE, every element counted)."""
    pattern = f"{prefix}*"
    return sum(int(client.memory_usage(k, samples=0) or 0) for k in client.scan_iter(pattern))


SaverFactory = Callable[..., RedisCheckpointSaver]


@pytest.fixture
async def saver_on() -> AsyncIterator[Callable[..., RedisCheckpointSaver]]:
    """Makes savers, `saver_on(url, **from_url_options)`, each with clients of its own (a
    replica), all closed after the test whatever its outcome."""
    made: list[RedisCheckpointSaver] = []

    def make(url: str, **kwargs: Any) -> RedisCheckpointSaver:
        made.append(RedisCheckpointSaver.from_url(url, **kwargs))
        return made[-1]

    yield make
    for s in made:
        await s.aclose()
        s.close()


@pytest.fixture
def new_saver(saver_on: Callable[..., RedisCheckpointSaver], redis_url: str) -> SaverFactory:
    """Makes savers (`from_url` keyword arguments) on the shared, emptied redis-server."""
    return lambda **kwargs: saver_on(redis_url, **kwargs)


@pytest.fixture
def saver(new_saver: SaverFactory) -> RedisCheckpointSaver:
    """A saver with the default settings, sync and async clients."""
    return new_saver()


@pytest.fixture
def server(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client to look at what the saver stored."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: LocalRedisCluster) -> str:
    """Any node of the 3-primary cluster, every node emptied before the test."""
    redis_cluster.flushall()
    return redis_cluster.url
