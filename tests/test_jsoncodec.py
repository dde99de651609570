"""The fast JSON path accepts and refuses exactly what the standard library does."""

from __future__ import annotations

import json

import pytest

from timebank_realtime import jsoncodec

ACCEPTED = [
    '{"amount": 340282366920938463463374607431768211455}',  # u128 max: beyond orjson's 64 bits
    '{"amount": -9223372036854775809, "f": 1.25e-7}',
    '{"s": "\\ud800 lone surrogate"}',
    '{"a": 1, "a": 2}',
    '{"text": "caf\\u00e9 \\u0000 nul"}',
    '[1.5, -0, true, null, "x"]',
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_loads_accepts_what_json_accepts(text: str) -> None:
    got, want = jsoncodec.loads(text), json.loads(text)
    assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    assert [type(v) for v in (got.values() if isinstance(got, dict) else got)] == \
        [type(v) for v in (want.values() if isinstance(want, dict) else want)]
    assert jsoncodec.loads(text.encode()) is not None


@pytest.mark.parametrize("text", ["", "{", '{"a": }', "[1,]", "\xff", '{"x": NaN}', "[Infinity]",
                                  '{"n": 12345678901234567890, "x": -Infinity}'])
def test_loads_refuses_with_the_standard_errors(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        jsoncodec.loads(text)
    with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
        jsoncodec.loads(b"\xff\xfe{}")


@pytest.mark.parametrize("value", [
    {"big": 2**200, "neg": -(2**70)},
    {1: "int key"},
    {"s": "\ud800"},
    {"plain": ["caf\u00e9", 1, 2.5, None, True]},
])
def test_dumps_writes_what_json_would_read_back(value: object) -> None:
    text = jsoncodec.dumps(value)
    assert json.loads(text) == json.loads(json.dumps(value))
    assert jsoncodec.dumps_bytes(value).decode("utf-8", "surrogatepass") == text


@pytest.mark.parametrize("text", ['{"a":12345678901234567890}', '[ -12345678901234567890 ]',
                                  '{"a": [1, 99999999999999999999]}', " 12345678901234567890"])
def test_big_integers_anywhere_keep_every_digit(text: str) -> None:
    assert jsoncodec.loads(text) == json.loads(text)
    assert jsoncodec.loads(text.encode()) == json.loads(text)
