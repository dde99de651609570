"""Prometheus metrics, in a registry of the application's own (no process-global state)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self._subscriptions_by_kind: Callable[[], dict[str, int]] | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter("timebank_webhook_deliveries", "Webhook deliveries by format and HTTP status.",
                                  ["format", "status"], registry=r)
        self.delivery_seconds = Histogram("timebank_webhook_delivery_seconds", "Time to handle a webhook delivery.",
                                          registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.changes = Counter("timebank_changes", "Changes written to the log: apply, rollback, restore.",
                               ["change"], registry=r)
        self.duplicates = Counter("timebank_duplicate_rows", "Delivered rows that were already stored.", registry=r)
        self.tailer_lag_cursors = Gauge("timebank_tailer_lag_cursors",
                                        "Changes committed that this process has not pushed yet.", registry=r)
        self.tailer_idle_seconds = Gauge("timebank_tailer_seconds_since_last_change",
                                         "Seconds since this process last pushed a change.", registry=r)
        self.push_seconds = Histogram("timebank_push_latency_seconds", "From commit to emit, per change.",
                                      registry=r, buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.sockets = Gauge("timebank_sockets_connected", "Connected Socket.IO clients.", registry=r)
        self.subscriptions = Gauge("timebank_subscriptions", "Subscriptions by the field they are indexed by.",
                                   ["kind"], registry=r)
        self.messages = Counter("timebank_messages_emitted", "Socket.IO messages emitted, by event name.",
                                ["event"], registry=r)
        self.slow_consumers = Counter("timebank_slow_consumer_disconnects",
                                      "Connections sent chainhook:resync and disconnected.", registry=r)
        self.gc_frozen = Gauge("timebank_gc_frozen_objects", "Objects alive once started, moved out of the garbage "
                               "collector's reach (gc.freeze): never traversed by a collection.", registry=r)
        self.gc_frozen.set_function(gc.get_freeze_count)

    def watch(self, sockets: Callable[[], float], subscriptions_by_kind: Callable[[], dict[str, int]],
              socket_writes: Callable[[], dict[str, int]]) -> None:
        """Figures read at scrape time from the hub's own state (kept as plain integers on the hot path)."""
        self.sockets.set_function(sockets)
        self._subscriptions_by_kind = subscriptions_by_kind
        self.registry.register(_SocketWrites(socket_writes))

    def render(self) -> bytes:
        if self._subscriptions_by_kind is not None:
            for kind, count in self._subscriptions_by_kind().items():
                self.subscriptions.labels(kind=kind).set(count)
        return generate_latest(self.registry)


class _SocketWrites(Collector):
    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("timebank_socket_writes", "Messages handed to sockets: written straight to "
                                     "the connection, or queued for the socket's Engine.IO writer.",
                                     labels=["path"])
        for path, count in self._read().items():
            family.add_metric([path], count)
        yield family
