"""The Clarity decoder against hand-built vectors, real payload values, and generated values."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timebank_realtime.chainhook.clarity import MAX_DEPTH, ClarityDecodeError, decode, decode_hex
from timebank_realtime.chainhook.principals import decode_standard_principal

from .conftest import load_fixture

ADDRESS = "SPWKDKPZ3QDPQGDADWJ3EWPAP14CB1N1HDQ897W5"


# A small encoder, written from SIP-005, to generate test inputs. Values are (type, payload) pairs
# so that the expected decoding is unambiguous.
def _length_prefixed(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def _principal_bytes(address: str) -> bytes:
    version, hash160 = decode_standard_principal(address)
    return bytes([version]) + hash160


def _contract_bytes(contract: str) -> bytes:
    address, name = contract.split(".")
    return _principal_bytes(address) + bytes([len(name)]) + name.encode()


_ENCODERS: dict[str, Any] = {
    "int": lambda n: b"\x00" + n.to_bytes(16, "big", signed=True),
    "uint": lambda n: b"\x01" + n.to_bytes(16, "big"),
    "buff": lambda b: b"\x02" + _length_prefixed(b),
    "bool": lambda b: b"\x03" if b else b"\x04",
    "principal": lambda a: b"\x05" + _principal_bytes(a),
    "contract": lambda c: b"\x06" + _contract_bytes(c),
    "ok": lambda v: b"\x07" + encode(v),
    "err": lambda v: b"\x08" + encode(v),
    "none": lambda _: b"\x09",
    "some": lambda v: b"\x0a" + encode(v),
    "list": lambda vs: b"\x0b" + struct.pack(">I", len(vs)) + b"".join(encode(v) for v in vs),
    "tuple": lambda d: b"\x0c" + struct.pack(">I", len(d))
    + b"".join(bytes([len(k)]) + k.encode() + encode(v) for k, v in d.items()),
    "ascii": lambda s: b"\x0d" + _length_prefixed(s.encode("ascii")),
    "utf8": lambda s: b"\x0e" + _length_prefixed(s.encode("utf-8")),
}


def encode(value: tuple[str, Any]) -> bytes:
    kind, payload = value
    encoded: bytes = _ENCODERS[kind](payload)
    return encoded


def expected(value: tuple[str, Any]) -> Any:
    kind, payload = value
    if kind in ("int", "uint"):
        return str(payload)
    if kind == "buff":
        return "0x" + payload.hex()
    if kind in ("ok", "err"):
        return {kind: expected(payload)}
    if kind == "none":
        return None
    if kind == "some":
        return expected(payload)
    if kind == "list":
        return [expected(v) for v in payload]
    if kind == "tuple":
        return {k: expected(v) for k, v in payload.items()}
    return payload


leaves = st.one_of(
    st.integers(-(2**127), 2**127 - 1).map(lambda n: ("int", n)),
    st.integers(0, 2**128 - 1).map(lambda n: ("uint", n)),
    st.binary(max_size=40).map(lambda b: ("buff", b)),
    st.booleans().map(lambda b: ("bool", b)),
    st.just(("principal", ADDRESS)),
    st.just(("contract", ADDRESS + ".time-bank")),
    st.just(("none", None)),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(lambda s: ("ascii", s)),
    st.text(max_size=20).map(lambda s: ("utf8", s)),
)
names = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        children.map(lambda v: ("ok", v)),
        children.map(lambda v: ("err", v)),
        children.map(lambda v: ("some", v)),
        st.lists(children, max_size=4).map(lambda vs: ("list", vs)),
        st.dictionaries(names, children, max_size=4).map(lambda d: ("tuple", d)),
    ),
    max_leaves=20,
)


@given(values)
@settings(max_examples=300, deadline=None)
def test_generated_values_decode_to_their_json_form(value: tuple[str, Any]) -> None:
    assert decode(encode(value)) == expected(value)


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_decode_or_raise_only_clarity_decode_error(data: bytes) -> None:
    with contextlib.suppress(ClarityDecodeError):
        decode(data)


@given(values, st.data())
@settings(max_examples=200, deadline=None)
def test_truncated_values_are_refused(value: tuple[str, Any], data: st.DataObject) -> None:
    encoded = encode(value)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(ClarityDecodeError):
        decode(encoded[:cut])


def test_real_print_value_from_arkadiko_mainnet() -> None:
    payload = load_fixture("v1-stacks-print-event-arkadiko-mainnet-2023.json")
    events = payload["apply"][0]["transactions"][0]["metadata"]["receipt"]["events"]
    raw = events[3]["data"]["raw_value"]
    assert decode_hex(raw) == {
        "action": "minted",
        "data": {"amount": "130000000", "recipient": ADDRESS},
        "type": "token",
    }
    assert decode_hex(events[4]["data"]["raw_value"]) == {"ok": True}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0x", "needs 1 bytes"),
        ("0xff", "unknown type prefix 0xff"),
        ("0x0301", "trailing bytes"),
        ("0x0d00000001ff", "not valid ascii"),
        ("0xzz", "not hex"),
        ("0x06" + "16" + "00" * 20 + "01" + "31", "not a valid contract name"),
    ],
)
def test_malformed_values_say_what_is_wrong(raw: str, message: str) -> None:
    with pytest.raises(ClarityDecodeError, match=message):
        decode_hex(raw)


def test_nesting_is_bounded() -> None:
    deep = b"\x0a" * (MAX_DEPTH + 5) + b"\x03"
    with pytest.raises(ClarityDecodeError, match="nested deeper"):
        decode(deep)
    assert decode(b"\x0a" * 10 + b"\x03") is True
