"""Decoder for the Clarity value serialization format (SIP-005), as JSON-ready Python values.

Chainhook's raw mode sends print values as hex (``raw_value``); we decode them so that stored
events and pushed messages carry readable JSON. The mapping is documented in docs/normalization.md (Clarity values):

- int, uint -> decimal string (128-bit values do not fit JavaScript numbers)
- bool -> bool; buffer -> "0x…" hex; principals -> their c32 string form
- none -> null; (some v) -> v; (ok v) -> {"ok": v}; (err v) -> {"err": v}
- tuple -> object; list -> array; string-ascii / string-utf8 -> string
"""

from __future__ import annotations

from typing import Any

from .principals import InvalidPrincipal, encode_standard_principal, is_contract_name

# Clarity itself refuses values nested deeper than this; it also bounds our recursion.
MAX_DEPTH = 32

_INT, _UINT, _BUFFER, _TRUE, _FALSE = 0x00, 0x01, 0x02, 0x03, 0x04
_STANDARD_PRINCIPAL, _CONTRACT_PRINCIPAL = 0x05, 0x06
_OK, _ERR, _NONE, _SOME = 0x07, 0x08, 0x09, 0x0A
_LIST, _TUPLE, _STRING_ASCII, _STRING_UTF8 = 0x0B, 0x0C, 0x0D, 0x0E


class ClarityDecodeError(ValueError):
    """The bytes are not one well-formed serialized Clarity value."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def take(self, length: int) -> bytes:
        end = self._offset + length
        if end > len(self._data):
            raise ClarityDecodeError(
                f"value needs {length} bytes at offset {self._offset}, "
                f"only {len(self._data) - self._offset} remain"
            )
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    @property
    def finished(self) -> bool:
        return self._offset == len(self._data)

    @property
    def offset(self) -> int:
        return self._offset


def decode_hex(value: str) -> Any:
    """Decode a ``0x``-prefixed hex string holding one serialized Clarity value."""
    text = value[2:] if value.startswith(("0x", "0X")) else value
    try:
        data = bytes.fromhex(text)
    except ValueError as error:
        raise ClarityDecodeError(f"not hex: {error}") from None
    return decode(data)


def decode(data: bytes) -> Any:
    reader = _Reader(data)
    result = _read_value(reader, depth=0)
    if not reader.finished:
        raise ClarityDecodeError(f"{len(data) - reader.offset} trailing bytes after the value")
    return result


def _read_value(reader: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ClarityDecodeError(f"value nested deeper than {MAX_DEPTH}")
    type_id = reader.byte()
    reader_for_type = _READERS.get(type_id)
    if reader_for_type is None:
        raise ClarityDecodeError(f"unknown type prefix 0x{type_id:02x} at offset {reader.offset - 1}")
    return reader_for_type(reader, depth)


def _read_int(reader: _Reader, _depth: int) -> str:
    return str(int.from_bytes(reader.take(16), "big", signed=True))


def _read_uint(reader: _Reader, _depth: int) -> str:
    return str(int.from_bytes(reader.take(16), "big", signed=False))


def _read_buffer(reader: _Reader, _depth: int) -> str:
    return "0x" + reader.take(reader.u32()).hex()


def _read_standard_principal(reader: _Reader, _depth: int) -> str:
    version = reader.byte()
    try:
        return encode_standard_principal(version, reader.take(20))
    except InvalidPrincipal as error:
        raise ClarityDecodeError(str(error)) from None


def _read_contract_principal(reader: _Reader, depth: int) -> str:
    address = _read_standard_principal(reader, depth)
    name = reader.take(reader.byte()).decode("ascii", errors="replace")
    if not is_contract_name(name):
        raise ClarityDecodeError(f"{name!r} is not a valid contract name")
    return f"{address}.{name}"


def _read_list(reader: _Reader, depth: int) -> list[Any]:
    return [_read_value(reader, depth + 1) for _ in range(reader.u32())]


def _read_tuple(reader: _Reader, depth: int) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for _ in range(reader.u32()):
        name = _decode_text(reader.take(reader.byte()), "ascii", "tuple field name")
        fields[name] = _read_value(reader, depth + 1)
    return fields


def _read_string_ascii(reader: _Reader, _depth: int) -> str:
    return _decode_text(reader.take(reader.u32()), "ascii", "string-ascii")


def _read_string_utf8(reader: _Reader, _depth: int) -> str:
    return _decode_text(reader.take(reader.u32()), "utf-8", "string-utf8")


def _decode_text(raw: bytes, encoding: str, what: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise ClarityDecodeError(f"{what} is not valid {encoding}: {error.reason}") from None


def _wrap(key: str) -> Any:
    def read(reader: _Reader, depth: int) -> dict[str, Any]:
        return {key: _read_value(reader, depth + 1)}

    return read


_READERS = {
    _INT: _read_int,
    _UINT: _read_uint,
    _BUFFER: _read_buffer,
    _TRUE: lambda _reader, _depth: True,
    _FALSE: lambda _reader, _depth: False,
    _STANDARD_PRINCIPAL: _read_standard_principal,
    _CONTRACT_PRINCIPAL: _read_contract_principal,
    _OK: _wrap("ok"),
    _ERR: _wrap("err"),
    _NONE: lambda _reader, _depth: None,
    _SOME: lambda reader, depth: _read_value(reader, depth + 1),
    _LIST: _read_list,
    _TUPLE: _read_tuple,
    _STRING_ASCII: _read_string_ascii,
    _STRING_UTF8: _read_string_utf8,
}
