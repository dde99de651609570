"""Messages encoded once for every socket they go to: the Engine.IO packet text that python-engineio's
writer sends (websocket or polling), and the websocket frame bytes that direct writes send."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import engineio

from ... import jsoncodec


class EncodedPacket(engineio.packet.Packet):  # type: ignore[misc]
    """An Engine.IO message encoded once, however many sockets it is sent to: as text for the
    Engine.IO writer (websocket or polling) and as a whole websocket frame for direct writes."""

    def __init__(self, event: str, message: bytes, weight: int = 1) -> None:
        super().__init__(engineio.packet.MESSAGE)
        self.event = event
        self.weight = weight  # how many changes it carries, for the slow-consumer limit
        self._message = message  # the Engine.IO packet: b"4" + the Socket.IO packet
        self._text: str | None = None
        self._frame: bytes | None = None

    @property
    def packets(self) -> tuple[EncodedPacket]:
        return (self,)

    def encode(self, b64: bool = False) -> str:
        if self._text is None:
            self._text = self._message.decode()
        return self._text

    @property
    def websocket_frame(self) -> bytes:
        """The server-to-client websocket text frame (RFC 6455 5.2: final, unmasked, and
        uncompressed, since compression is declined)."""
        if self._frame is None:
            self._frame = server_frame(self._message)
        return self._frame


class PacketRun:
    """Several messages for the same sockets, in order: one write of all their frames to a
    connection, or one queue entry each."""

    def __init__(self, packets: list[EncodedPacket]) -> None:
        self.packets = packets
        self._frames: bytes | None = None

    @property
    def websocket_frame(self) -> bytes:
        if self._frames is None:
            self._frames = b"".join(packet.websocket_frame for packet in self.packets)
        return self._frames


Outgoing = EncodedPacket | PacketRun


def server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A whole server-to-client websocket frame (RFC 6455 5.2: final, unmasked, uncompressed);
    text unless ``opcode`` says otherwise."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, size))
    elif size < 1 << 16:
        header = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return header + payload


def encode_message(name: str, payload: Mapping[str, Any], *, weight: int = 1) -> EncodedPacket:
    """A Socket.IO EVENT on the default namespace ("2" + JSON array, Socket.IO protocol v5) inside an
    Engine.IO MESSAGE ("4"). Our payloads are plain JSON with no binary parts, which spares the
    walk python-socketio makes through every value looking for bytes."""
    return EncodedPacket(name, b"42" + jsoncodec.dumps_bytes([name, payload]), weight)
