"""A loopback TCP proxy a test controls as a network would fail: ``cut()`` aborts its connections
(no close handshake), ``pause()`` stops passing the server's bytes on (a client that stops reading;
with small buffers the server backs up quickly), and ``target_port`` is where the next connection
goes (retarget between connections only)."""

from __future__ import annotations

import asyncio
import contextlib
import socket


class TcpProxy:
    def __init__(self, target_port: int, buffer_bytes: int = 65536) -> None:
        self.target_port = target_port  # read at each accept
        self._buffer_bytes = buffer_bytes
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._buffer_bytes)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.target_port))
            upstream_reader, upstream_writer = await asyncio.open_connection(sock=sock, limit=self._buffer_bytes)
        except OSError:
            sock.close()
            client_writer.close()
            return
        self._transports |= {client_writer.transport, upstream_writer.transport}
        await asyncio.gather(self._pipe(client_reader, upstream_writer, None),
                             self._pipe(upstream_reader, client_writer, self._flowing))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    gate: asyncio.Event | None) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, RuntimeError):
            while True:
                if gate is not None:
                    await gate.wait()
                chunk = await reader.read(self._buffer_bytes)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
        writer.close()
        self._transports.discard(writer.transport)

    def cut(self) -> int:
        """Abort every open connection, like a dropped network; returns how many."""
        cut = 0
        for transport in list(self._transports):
            transport.abort()
            cut += 1
        self._transports.clear()
        return cut

    async def close(self) -> None:
        self.resume()
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
