"""Socket.IO connections: who is connected, with what token, subscribing and unsubscribing.

What each socket is sent, and when, is the fan-out's (``fanout.py``); how it gets onto the
connection is the wire's (``wire/``). The protocol is in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from ..errors import DatabaseUnavailable
from ..metrics import Metrics
from ..settings import Settings
from ..store.reads import LogReader
from .auth import AuthError, verify_token
from .fanout import Fanout, Pushed
from .messages import HEARTBEAT, heartbeat_message
from .sessions import Session, TokenBucket
from .subscriptions import FilterError, SubscriptionRegistry, parse_subscribe
from .tasks import TaskSet
from .wire import Wire, encode_message

logger = logging.getLogger(__name__)


class PushedWithTip(Pushed, Protocol):
    @property
    def tip(self) -> Mapping[str, Any]: ...


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class RealtimeHub:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self.wire = Wire(settings)
        self.registry = SubscriptionRegistry()
        self.sessions: dict[str, Session] = {}
        self._tasks = TaskSet()
        self.fanout = Fanout(settings, metrics, self.wire, sessions=self.sessions, registry=self.registry,
                             tasks=self._tasks, disconnect=self._disconnect)
        metrics.watch(lambda: len(self.sessions), lambda: self.registry.count_by_kind(), lambda: dict(self.wire.writes))
        self._auth_secret = settings.socket_auth_secret.get_secret_value() if settings.socket_auth_secret else None
        self._log: LogReader | None = None
        self._pushed: PushedWithTip | None = None
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self.wire.on("connect", self._on_connect)
        self.wire.on("disconnect", self._on_disconnect)
        self.wire.on("subscribe", self._on_subscribe)
        self.wire.on("unsubscribe", self._on_unsubscribe)

    def attach(self, app: web.Application) -> None:
        self.wire.attach(app)

    def bind(self, log: LogReader, pushed: PushedWithTip) -> None:
        """Read replays from ``log``; live subscribers get what the tailer pushes after ``pushed``."""
        self._log, self._pushed = log, pushed
        self.fanout.bind(log, pushed)

    @property
    def cursor(self) -> int:
        """The last change handed to the sockets."""
        assert self._pushed is not None
        return self._pushed.cursor

    @property
    def tip(self) -> Mapping[str, Any]:
        assert self._pushed is not None
        return self._pushed.tip

    @property
    def connection_count(self) -> int:
        return len(self.sessions)

    def publish(self, records: list[dict[str, Any]]) -> None:
        self.fanout.publish(records)

    # --- lifecycle --------------------------------------------------------------------------------

    async def run_heartbeat(self) -> None:
        """Tell every socket the cursor and chain tip, so a quiet chain is told from a dead link."""
        assert self._pushed is not None
        while True:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            packet = encode_message(HEARTBEAT, heartbeat_message(self.cursor, self._pushed.tip, datetime.now(UTC)))
            for session in list(self.sessions.values()):
                self.wire.send(session.link, packet)

    async def close(self) -> None:
        for handle in self._expiries.values():
            handle.cancel()
        self._tasks.cancel_all()
        self.wire.close()
        for sid in list(self.sessions):
            await self.wire.disconnect(sid)
        await self.wire.close_connections(grace_seconds=1.0)

    async def disconnect(self, sid: str) -> None:
        await self.wire.disconnect(sid)

    # --- connections -------------------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: Mapping[str, Any], auth: Any = None) -> None:
        grant = None
        if self._auth_secret is not None:
            token = auth.get("token") if isinstance(auth, Mapping) else None
            try:
                grant = verify_token(token, self._auth_secret)
            except AuthError as error:
                logger.info("socket refused remote=%s code=%s", environ.get("REMOTE_ADDR"), error.code)
                raise self.wire.refusal(error.code, error.message) from None
            delay = max(0.0, grant.expires_at - time.time())
            self._expiries[sid] = asyncio.get_running_loop().call_later(delay, self._expire, sid)
        batched = isinstance(auth, Mapping) and auth.get("batch") is True
        self.sessions[sid] = Session(sid=sid, grant=grant, batched=batched, link=self.wire.link(sid, environ),
                                     bucket=TokenBucket.full(self._settings.subscribe_rate_per_second,
                                                             time.monotonic()))
        logger.info("socket connected sid=%s remote=%s subject=%s batch=%s", sid, environ.get("REMOTE_ADDR"),
                    grant.subject if grant else "-", batched)

    def _expire(self, sid: str) -> None:
        logger.info("socket token expired sid=%s", sid)
        self._tasks.spawn(self._disconnect(sid))

    async def _disconnect(self, sid: str) -> None:
        # Engine.IO flushes what is queued first; a client too stuck to take it is dropped by ping.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.socket_ping_timeout_seconds):
                await self.wire.disconnect(sid)

    async def _on_disconnect(self, sid: str, *_reason: Any) -> None:
        session = self.sessions.pop(sid, None)
        expiry = self._expiries.pop(sid, None)
        if expiry is not None:
            expiry.cancel()
        if session is not None:
            self.wire.unlink(session.link)
        dropped = self.registry.drop_socket(sid)
        logger.info("socket disconnected sid=%s subscriptions=%d resynced=%s", sid, dropped,
                    session.resyncing if session else False)

    # --- subscribe / unsubscribe -------------------------------------------------------------------

    async def _on_subscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        session = self.sessions.get(sid)
        if session is None or session.resyncing:
            return _error("not_connected", "this connection is closing")
        if not session.bucket.take(time.monotonic()):
            return _error("rate_limited", f"at most {self._settings.subscribe_rate_per_second:g} "
                          "subscribe calls a second per connection")
        try:
            request = parse_subscribe(data, self._settings.max_filter_values)
        except FilterError as error:
            return _error(error.code, error.message)
        if session.grant is not None and not session.grant.permits(request.filter):
            return _error("forbidden", "the connection's token does not allow this subscription")
        if request.since is not None and request.since > self.cursor:
            refusal = await self._check_not_in_future(request.since)
            if refusal is not None:
                return refusal
            if session.resyncing or self.sessions.get(sid) is not session:
                return _error("not_connected", "this connection is closing")
        # Checked after the only await, so that concurrent subscribe calls cannot pass it together.
        limit = self._settings.max_subscriptions_per_connection
        if len(session.subscriptions) >= limit:
            return _error("too_many_subscriptions", f"a connection holds at most {limit} subscriptions")
        subscription = self.fanout.subscribe(session, request.filter, request.since)
        return {"ok": True, "id": subscription.id, "cursor": subscription.last_tagged,
                "filter": request.filter.describe()}

    async def _check_not_in_future(self, since: int) -> dict[str, Any] | None:
        assert self._log is not None
        try:
            head = await self._log.last_cursor()
        except DatabaseUnavailable:
            return _error("unavailable", "the event store is unreachable; retry the subscription")
        if since > head:
            return _error("cursor_in_future", f"cursor {since} is beyond the newest change ({head})")
        return None

    async def _on_unsubscribe(self, sid: str, data: Any = None) -> dict[str, Any]:
        sub_id = data.get("id") if isinstance(data, Mapping) else None
        if not isinstance(sub_id, str):
            return _error("invalid_request", "unsubscribe takes {\"id\": <subscription id>}")
        session = self.sessions.get(sid)
        if session is None or not self.fanout.unsubscribe(session, sub_id):
            return _error("unknown_subscription", f"this connection has no subscription {sub_id!r}")
        return {"ok": True, "id": sub_id}
