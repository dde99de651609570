"""Websocket frames from clients (RFC 6455 section 5), parsed as the bytes arrive, in any split.

A few dozen lines rather than a library's connection object: an idle connection holds only this
reader's two empty slots. Client frames are masked; no extension is negotiated, so the reserved
bits must be clear.
"""

from __future__ import annotations

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
CONTINUATION = 0x0
PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1002, 1007, 1009


class FrameError(Exception):
    """The connection must be closed with ``code`` (RFC 6455 7.4.1)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def unmask(payload: bytes | bytearray | memoryview, mask: bytes | bytearray | memoryview) -> bytes:
    size = len(payload)
    if size == 0:
        return b""
    key = (bytes(mask) * (size // 4 + 1))[:size]
    # XOR as two big integers: linear, and no Python loop over the bytes.
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class FrameReader:
    """Complete messages and control frames out of a client's byte stream."""

    __slots__ = ("_fragments", "_pending")

    def __init__(self) -> None:
        self._pending: bytearray | None = None  # bytes of a frame not complete yet
        self._fragments: list[bytes] | None = None  # a fragmented message: its opcode's byte, then parts

    def feed(self, data: bytes, max_size: int) -> list[tuple[int, bytes]]:
        """(opcode, payload) of each message or control frame completed by ``data``."""
        if self._pending is not None:
            self._pending += data
            view: bytes | bytearray = self._pending
        else:
            view = data
        out: list[tuple[int, bytes]] = []
        offset = 0
        while True:
            frame = _frame_at(view, offset, max_size)
            if frame is None:
                break
            fin, opcode, payload, offset = frame
            message = self._assemble(fin, opcode, payload, max_size)
            if message is not None:
                out.append(message)
        rest = len(view) - offset
        self._pending = bytearray(view[offset:]) if rest else None
        return out

    def _assemble(self, fin: bool, opcode: int, payload: bytes, max_size: int) -> tuple[int, bytes] | None:
        if opcode >= CLOSE:
            return opcode, payload
        if opcode == CONTINUATION:
            if self._fragments is None:
                raise FrameError(PROTOCOL_ERROR, "continuation without a message")
            self._fragments.append(payload)
            if sum(len(part) for part in self._fragments) - 1 > max_size:
                raise FrameError(TOO_BIG, "message too big")
            if not fin:
                return None
            first, *parts = self._fragments
            self._fragments = None
            return first[0], b"".join(parts)
        if self._fragments is not None:
            raise FrameError(PROTOCOL_ERROR, "new message inside a fragmented one")
        if fin:
            return opcode, payload
        self._fragments = [bytes((opcode,)), payload]
        return None


def _frame_at(view: bytes | bytearray, offset: int, max_size: int) -> tuple[bool, int, bytes, int] | None:
    """(fin, opcode, unmasked payload, next offset) of the frame at ``offset``, None if incomplete.
    A frame announcing more than ``max_size`` bytes is refused from its header, before its bytes."""
    header = _header_at(view, offset)
    if header is None:
        return None
    fin, opcode, length, head = header
    if length > max_size:
        raise FrameError(TOO_BIG, "message too big")
    end = offset + head + 4 + length
    if len(view) < end:
        return None
    mask = view[offset + head:offset + head + 4]
    return fin, opcode, unmask(view[offset + head + 4:end], mask), end


def _header_at(view: bytes | bytearray, offset: int) -> tuple[bool, int, int, int] | None:
    """(fin, opcode, payload length, header length before the mask), None if incomplete."""
    available = len(view) - offset
    if available < 2:
        return None
    first, second = view[offset], view[offset + 1]
    fin, opcode, length = bool(first & 0x80), first & 0x0F, second & 0x7F
    _check_header(first, second, opcode)
    if opcode >= CLOSE and (length > 125 or not fin):
        raise FrameError(PROTOCOL_ERROR, "bad control frame")
    if length == 126:
        return None if available < 4 else (fin, opcode, int.from_bytes(view[offset + 2:offset + 4], "big"), 4)
    if length == 127:
        return None if available < 10 else (fin, opcode, int.from_bytes(view[offset + 2:offset + 10], "big"), 10)
    return fin, opcode, length, 2


def _check_header(first: int, second: int, opcode: int) -> None:
    if first & 0x70:
        raise FrameError(PROTOCOL_ERROR, "reserved bits set")
    if not second & 0x80:
        raise FrameError(PROTOCOL_ERROR, "client frames must be masked")
    if opcode not in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG):
        raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
