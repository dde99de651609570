"""The application's typed keys: what create_app and its cleanup contexts put on the application,
and the handlers read."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .http.inflight import InFlight
from .metrics import Metrics
from .realtime.hub import RealtimeHub
from .settings import Settings
from .store.deliveries import DeliveryWriter
from .store.reads import HistoryReader, LogReader
from .tailer import Tailer

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
DSN = web.AppKey("dsn", str)
# One pool for all: the webhook writes; the tailer, the sockets and the history API only read.
WRITER = web.AppKey("writer", DeliveryWriter)
LOG = web.AppKey("log", LogReader)
HISTORY = web.AppKey("history", HistoryReader)
HUB = web.AppKey("hub", RealtimeHub)
TAILER = web.AppKey("tailer", Tailer)
TAILER_TASK = web.AppKey("tailer_task", asyncio.Task[None])
# Set when SIGTERM starts the drain (http/serving.py).
DRAINING = web.AppKey("draining", asyncio.Event)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
