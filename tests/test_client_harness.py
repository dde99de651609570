"""The control plane the client packages' tests drive (tests/client_harness.py) does what it says."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import socketio

from .client_harness import start_harness
from .conftest import Serve, close_http, eventually


async def test_control_plane_delivers_drops_and_resyncs(serve: Serve, db: asyncpg.Connection,
                                                       http: aiohttp.ClientSession) -> None:
    async with start_harness(serve) as harness:
        async with http.post(harness.control_url + "/deliver",
                             json={"kind": "synthetic", "height": 7, "events": 2, "success": False}) as response:
            answer = await response.json()
        assert answer["status"] == 200 and answer["tx_hash"] == f"0x{7:062x}aa"
        rows = await db.fetch("SELECT success, canonical FROM chainhook_events ORDER BY id")
        assert len(rows) >= 2 and {(r["success"], r["canonical"]) for r in rows} == {(False, True)}
        async with http.post(harness.control_url + "/deliver",
                             json={"kind": "synthetic", "height": 7, "events": 2, "rollback": True}) as response:
            assert (await response.json())["status"] == 200
        assert await db.fetchval("SELECT count(*) FROM chainhook_events WHERE canonical") == 0
        # The head is what the server has pushed, which trails the commit a moment.
        stored = await db.fetchval("SELECT last_cursor FROM chainhook_cursor")
        heads: list[int] = []
        for _ in range(100):
            async with http.get(harness.control_url + "/head") as response:
                heads.append((await response.json())["cursor"])
            if heads[-1] == stored:
                break
            await asyncio.sleep(0.05)
        assert heads[-1] == stored and heads == sorted(heads)

        markers: list[str] = []
        client = socketio.AsyncClient(reconnection=False)
        client.on("chainhook:resync", lambda message: markers.append(f"resync {message['cursor']}"))
        client.on("disconnect", lambda *_: markers.append("disconnect"))
        await client.connect(harness.url, transports=["websocket"])
        try:
            ack = await client.call("subscribe", {"contract": "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters"})
            assert ack["ok"]
            async with http.post(harness.control_url + "/resync") as response:
                assert await response.json() == {"resynced": 1}
            await eventually(lambda: markers == [f"resync {ack['cursor']}", "disconnect"])

            await client.connect(harness.url, transports=["websocket"])
            async with http.post(harness.control_url + "/disconnect") as response:
                assert await response.json() == {"dropped": 1}
            await eventually(lambda: markers[-1] == "disconnect" and len(markers) == 3)
        finally:
            await client.disconnect()
            await close_http(client)
