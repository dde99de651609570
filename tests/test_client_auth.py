"""Optional client authentication with HS256 tokens: refusals at connect, scopes, expiry."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
import socketio

from timebank_realtime.keys import HUB

from .conftest import Listener, Serve, close_http, eventually, url_of
from .expected import ARKADIKO_USER, MONSTERS

OpenListener = Callable[..., Awaitable[Listener]]
SECRET = "socket-signing-secret-for-the-test-suite-0123456789"


def mint(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode({"exp": int(time.time()) + 300, "sub": "user-1", **claims}, secret, algorithm=algorithm)


async def refused(url: str, auth: Any) -> Any:
    client = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", lambda data: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(url, transports=["websocket"], auth=auth, wait_timeout=5)
    await close_http(client)
    return errors[0]


@pytest.mark.parametrize(
    ("auth", "code"),
    [
        (None, "token_required"),
        ({}, "token_required"),
        ({"token": "not-a-jwt"}, "token_invalid"),
        ({"token": mint({}, secret="another-secret-that-is-also-long-enough-0123")}, "token_invalid"),
        ({"token": mint({"exp": int(time.time()) - 10})}, "token_expired"),
        ({"token": jwt.encode({"sub": "no-expiry"}, SECRET, algorithm="HS256")}, "token_invalid"),
        ({"token": mint({"scope": {"address": "nope"}})}, "token_invalid"),
    ],
)
async def test_bad_tokens_are_refused_at_connect(auth: Any, code: str, serve: Serve) -> None:
    server = await serve(socket_auth_secret=SECRET)
    error = await refused(url_of(server), auth)
    assert error["data"]["code"] == code
    assert error["message"].startswith(f"{code}: ")


async def test_a_valid_token_connects_and_may_subscribe_to_anything(serve: Serve, listener: OpenListener) -> None:
    server = await serve(socket_auth_secret=SECRET)
    client = await listener(url_of(server), auth={"token": mint({})})
    assert (await client.subscribe({}))["ok"]


async def test_token_scope_limits_subscriptions(serve: Serve, listener: OpenListener) -> None:
    server = await serve(socket_auth_secret=SECRET)
    token = mint({"scope": {"address": [ARKADIKO_USER]}})
    client = await listener(url_of(server), auth={"token": token})
    assert (await client.subscribe({"address": ARKADIKO_USER}))["ok"]
    assert (await client.subscribe({"type": "user", "address": ARKADIKO_USER}))["ok"]
    assert (await client.subscribe({"address": ARKADIKO_USER, "event_type": "print_event"}))["ok"]
    for outside in ({}, {"contract": MONSTERS}, {"address": "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2"},
                    {"address": [ARKADIKO_USER, "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2"]}):
        ack = await client.subscribe(outside)
        assert ack["error"]["code"] == "forbidden", outside


@pytest.mark.parametrize("scope,allowed,refused", [
    ({"topic": "blocks", "network": ["testnet"]}, [{"topic": "blocks", "network": "testnet"}],
     [{"network": "testnet"}, {}, {"topic": "blocks"}, {"topic": "blocks", "network": "mainnet"}]),
    ({"topic": "blocks"}, [{"topic": "blocks"}, {"topic": "blocks", "network": "mainnet"}],
     [{}, {"network": "mainnet"}]),
    ({"network": ["testnet"]}, [{"network": "testnet"}, {"topic": "blocks", "network": "testnet"}],
     [{}, {"topic": "blocks"}]),
])
async def test_a_scope_that_names_a_topic_holds_its_tokens_to_it(
        serve: Serve, listener: OpenListener, scope: dict[str, Any], allowed: list[dict[str, Any]],
        refused: list[dict[str, Any]]) -> None:
    server = await serve(socket_auth_secret=SECRET)
    client = await listener(url_of(server), auth={"token": mint({"scope": scope})})
    for subscription in allowed:
        assert (await client.subscribe(subscription))["ok"], subscription
    for subscription in refused:
        assert (await client.subscribe(subscription))["error"]["code"] == "forbidden", subscription


async def test_sockets_are_disconnected_when_their_token_expires(serve: Serve, listener: OpenListener) -> None:
    server = await serve(socket_auth_secret=SECRET)
    client = await listener(url_of(server), auth={"token": mint({"exp": int(time.time()) + 2})})
    assert client.client.connected
    await eventually(lambda: not client.client.connected, within=10)
    assert len(server.app[HUB].sessions) == 0


async def test_without_a_secret_tokens_are_not_needed(serve: Serve, listener: OpenListener) -> None:
    server = await serve()
    client = await listener(url_of(server))
    assert (await client.subscribe({}))["ok"]
