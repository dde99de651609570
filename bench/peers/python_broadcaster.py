"""Reference: a minimal stock python-socketio broadcaster on aiohttp, as its documentation shows one.

POST /publish {"changes": [...]} emits each change as its own ``chainhook:event`` to every client
(all in one room: the namespace). Prints {"port": n} when listening.

    .venv/bin/python bench/peers/python_broadcaster.py [port]
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import socketio
from aiohttp import web


async def main(port: int) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)

    @sio.on("subscribe")  # type: ignore[untyped-decorator]
    async def subscribe(_sid: str, _filter: Any = None) -> dict[str, Any]:
        return {"ok": True, "id": "sub-1", "cursor": 0}

    async def publish(request: web.Request) -> web.Response:
        changes = (await request.json())["changes"]
        for change in changes:
            await sio.emit("chainhook:event", change)
        return web.json_response({"emitted": len(changes)})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    sio.attach(app)
    app.router.add_post("/publish", publish)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(json.dumps({"port": site._server.sockets[0].getsockname()[1]}), flush=True)  # type: ignore[union-attr]
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
