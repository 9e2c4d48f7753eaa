"""Prometheus metrics, one registry per app so several apps can live in one process (tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chat_history_k8s.history.base import StoreMetric

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ReportsSize(Protocol):
    """A store that reports what it holds (`HistoryStore`, `Conversations`)."""

    def size_metrics(self) -> list[StoreMetric]: ...


class Metrics:
    """Everything `/metrics` exports. Names are documented in docs/configuration.md."""

    def __init__(self) -> None:
        # `_created` series double the output and nothing here reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "chat_http_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.turns = Counter("chat_turns", "Chat turns answered.", ["backend"], registry=r)
        self.errors = Counter("chat_errors", "Error responses by error code.", ["code"], registry=r)
        self.history_read = Histogram(
            "chat_history_read_seconds",
            "Time to load a session's context window (checkpointer: its latest checkpoint).",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.history_append = Histogram(
            "chat_history_append_seconds",
            "Time to append a turn atomically (checkpointer: write the turn's checkpoint).",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_round_trips = Counter(
            "chat_history_redis_round_trips",
            "Round trips to Redis by operation.",
            ["op"],
            registry=r,
        )
        self._round_trips: dict[str, Counter] = {}  # redis_round_trips' children by op
        self._store_collector: _StoreCollector | None = None

    def round_trip(self, op: str) -> None:
        counter = self._round_trips.get(op)
        if counter is None:  # labels() costs a few microseconds: once per operation
            counter = self._round_trips[op] = self.redis_round_trips.labels(op)
        counter.inc()

    def watch_store(self, store: ReportsSize) -> None:
        """Export what `store` reports about itself (`size_metrics()`) at every scrape."""
        self._store_collector = _StoreCollector(store)
        self.registry.register(self._store_collector)


class _StoreCollector(Collector):
    """Reads a store's own metrics when Prometheus scrapes; knows no backend."""

    def __init__(self, store: ReportsSize) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: its families are only known at collect time

    def collect(self) -> Iterator[Metric]:
        for m in self.store.size_metrics():
            family: GaugeMetricFamily | CounterMetricFamily
            if m.kind == "gauge":
                family = GaugeMetricFamily(m.name, m.documentation, labels=m.labels)
            else:
                family = CounterMetricFamily(m.name, m.documentation, labels=m.labels)
            for label_values, value in m.samples.items():
                family.add_metric(label_values, value)
            yield family
