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

from .errors import PayloadError

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


# Limits on a webhook body (``loads_payload``), enforced before anything recurses over it: pydantic,
# normalization, the jsonb writer and the socket encoder all walk values recursively, and an
# incremental parser's memory grows with the square of the depth. The real payloads nest 11 levels;
# a decoded Clarity value adds at most 2 per Clarity level (tuple in list), and Clarity stops at 32.
MAX_DEPTH = 128
# Clarity's largest integer (u128) has 39 digits; a number literal past this is not a chain value.
MAX_NUMBER_CHARS = 100
# Stacks caps a transaction at 2 MiB, so its hex (raw_tx, deployed source) stays under 4 Mi characters.
MAX_STRING_CHARS = 8 * 1024 * 1024

# A JSON token: a string, a structural character, or the text of a number/literal.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]|[^\s\[\]{}:,"]+')


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError("number too long")
    return float(text)


def loads_payload(text: str | bytes | bytearray) -> Any:
    """Parse a webhook body within the limits above. Raises what ``loads`` raises for text that is not
    JSON, and PayloadError (with the JSON path of the first offending value) past a limit. Bytes must
    be UTF-8 (RFC 8259), as the streamed parser requires too: no UTF-16, no encoded lone surrogates."""
    try:
        if _has_long_number(text):
            value = _bounded_standard_loads(text)
        else:
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                value = _bounded_standard_loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except (RecursionError, ValueError):  # nested past the interpreter's stack, or a number too long
        raise _limit_error(text) from None
    if not _within_limits(value):
        path, message = _walk_for_limits(value) or ("$", "past the parse limits")
        raise PayloadError(message, path=path)
    return value


def _bounded_standard_loads(text: str | bytes | bytearray) -> Any:
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8")
    return json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int, parse_float=_bounded_float)


def _within_limits(document: Any) -> bool:
    """The fast check (a tenth of the parse time): no paths, no recursion, nothing but the limits."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    pop, push = pending.pop, pending.append
    while pending:
        value, depth = pop()
        if depth > MAX_DEPTH:
            return False
        for item in value.values() if type(value) is dict else value if type(value) is list else ():
            kind = type(item)
            if kind is dict or kind is list:
                push((item, depth + 1))
            elif kind is str and len(item) > MAX_STRING_CHARS:
                return False
    return True


def _limit_error(text: str | bytes | bytearray) -> PayloadError:
    """Locate what the parser refused. Only on refusal: a token walk in Python is slow."""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8", "replace")
    path, message = _scan_for_limits(text) or ("$", f"a value nested deeper than {MAX_DEPTH} levels or too long")
    return PayloadError(message, path=path)


def _render(parts: list[Any]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _scan_for_limits(text: str) -> tuple[str, str] | None:
    scan = _Scan()
    for match in _TOKEN.finditer(text):
        problem = scan.feed(match.group())
        if problem is not None:
            return _render(scan.parts), problem
    return None


class _Scan:
    """Where a token walk is: per open container, the key (object) or index (array) being read."""

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.objects: list[bool] = []
        self.expect_key = False

    def feed(self, token: str) -> str | None:
        first = token[0]
        if first in "[{":
            if len(self.parts) >= MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            self.parts.append(None if first == "{" else 0)
            self.objects.append(first == "{")
            self.expect_key = first == "{"
        elif first in "]}":
            if self.parts:
                self.parts.pop()
                self.objects.pop()
            self.expect_key = False
        elif first == ",":
            if self.objects and not self.objects[-1]:
                self.parts[-1] += 1
            self.expect_key = bool(self.objects and self.objects[-1])
        elif first != ":":
            return self._scalar(token)
        return None

    def _scalar(self, token: str) -> str | None:
        if token[0] != '"':
            return f"a number longer than {MAX_NUMBER_CHARS} characters" if len(token) > MAX_NUMBER_CHARS else None
        if self.expect_key:
            self.parts[-1], self.expect_key = token[1:-1], False
        elif len(token) - 2 > MAX_STRING_CHARS:
            return f"a string longer than {MAX_STRING_CHARS} characters"
        return None


def _walk_for_limits(document: Any) -> tuple[str, str] | None:
    """The path and reason of the first value past a limit, walking without recursion (slower: it
    carries every container's path)."""
    pending: list[tuple[Any, int, tuple[Any, ...]]] = [(document, 1, ())]
    while pending:
        value, depth, path = pending.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            continue
        if depth > MAX_DEPTH:
            return _render(list(path)), f"nested deeper than {MAX_DEPTH} levels"
        for key, item in items:
            if isinstance(item, str):
                if len(item) > MAX_STRING_CHARS:
                    return _render([*path, key]), f"a string longer than {MAX_STRING_CHARS} characters"
            elif isinstance(item, dict | list):
                pending.append((item, depth + 1, (*path, key)))
    return None


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
