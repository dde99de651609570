"""JSON on the hot paths: orjson where it is exact, the standard library where it is not.

orjson is several times faster but differs from the standard library on a few inputs: it reads
integers beyond 64 bits as floats (losing digits), and refuses lone surrogates and non-string keys.
Documents with a number of 19+ digits go to the standard library, as do whatever orjson refuses, so
every value reads back exactly. NaN and Infinity, which are not JSON (RFC 8259), are refused by
both paths. Pure.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# A number of 19 digits or more may be an integer beyond 64 bits (2**63 has 19 digits). Numbers follow
# ":", "[", "," or the start; digits inside strings (hashes, hex values) mostly do not, and when they do, the
# false alarm only costs the slower parser.
# (Two patterns rather than one alternation with "^": the regex engine scans several times faster
# for a leading character class, and this check runs on every jsonb value read.)
_LONG_NUMBER_TEXT = re.compile(r"[:\[,]\s*-?\d{19}")
_LONG_NUMBER_BYTES = re.compile(rb"[:\[,]\s*-?\d{19}")
_LONG_FIRST_NUMBER_TEXT = re.compile(r"\s*-?\d{19}")
_LONG_FIRST_NUMBER_BYTES = re.compile(rb"\s*-?\d{19}")


def _refuse_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def _standard_loads(text: str | bytes | bytearray) -> Any:
    return json.loads(text, parse_constant=_refuse_constant)


def _has_long_number(text: str | bytes | bytearray) -> bool:
    if isinstance(text, str):
        return bool(_LONG_NUMBER_TEXT.search(text) or _LONG_FIRST_NUMBER_TEXT.match(text))
    return bool(_LONG_NUMBER_BYTES.search(text) or _LONG_FIRST_NUMBER_BYTES.match(text))


def loads(text: str | bytes | bytearray) -> Any:
    """Parse JSON; raises what ``json.loads`` raises (JSONDecodeError, UnicodeDecodeError)."""
    if _has_long_number(text):
        return _standard_loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _standard_loads(text)


def dumps_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def dumps(value: Any) -> str:
    """Compact JSON text (non-ASCII characters as themselves)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
