"""Stacks principals: c32check encoding and validation.

Stacks addresses are c32check strings: ``S`` + the version character + c32(hash160 + checksum),
where the checksum is the first four bytes of sha256(sha256(version || hash160)). Contract
principals append ``.`` and a contract name.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

C32_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_C32_INDEX = {char: value for value, char in enumerate(C32_ALPHABET)}
_HASH160_LENGTH = 20
_CHECKSUM_LENGTH = 4
# Clarity 1 allowed 128-character names; newer contracts are limited to 40.
_CONTRACT_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_-]{0,127}")  # fullmatch: "$" would take a trailing newline
# Principals repeat heavily (a busy contract, its callers); c32 and two sha256 per check add up on
# ingest. The results are pure, so the most recent are kept (a few MB at most).
_CACHED_PRINCIPALS = 16_384


class InvalidPrincipal(ValueError):
    """A string that is not a well-formed, checksum-valid Stacks principal."""


def _checksum(version: int, payload: bytes) -> bytes:
    digest = hashlib.sha256(hashlib.sha256(bytes([version]) + payload).digest()).digest()
    return digest[:_CHECKSUM_LENGTH]


def c32_encode(data: bytes) -> str:
    """c32 of ``data``: its big-endian integer in base 32, one ``0`` per leading zero byte."""
    leading_zero_bytes = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, remainder = divmod(number, 32)
        digits.append(C32_ALPHABET[remainder])
    return "0" * leading_zero_bytes + "".join(reversed(digits))


def c32_decode(text: str) -> bytes:
    leading_zeros = len(text) - len(text.lstrip("0"))
    number = 0
    for char in text[leading_zeros:]:
        if char not in _C32_INDEX:
            raise InvalidPrincipal(f"{char!r} is not a c32 character")
        number = number * 32 + _C32_INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * leading_zeros + body


@lru_cache(maxsize=_CACHED_PRINCIPALS)
def encode_standard_principal(version: int, hash160: bytes) -> str:
    if not 0 <= version < 32:
        raise InvalidPrincipal(f"address version {version} is outside 0..31")
    return "S" + C32_ALPHABET[version] + c32_encode(hash160 + _checksum(version, hash160))


@lru_cache(maxsize=_CACHED_PRINCIPALS)
def decode_standard_principal(address: str) -> tuple[int, bytes]:
    """Return (version, hash160) of a standard principal, or raise InvalidPrincipal."""
    if len(address) < 3 or address[0] != "S" or address[1] not in _C32_INDEX:
        raise InvalidPrincipal(f"{address!r} does not start with S and a c32 version character")
    version = _C32_INDEX[address[1]]
    decoded = c32_decode(address[2:])
    if len(decoded) != _HASH160_LENGTH + _CHECKSUM_LENGTH:
        raise InvalidPrincipal(f"{address!r} does not encode a 20-byte hash")
    hash160, checksum = decoded[:_HASH160_LENGTH], decoded[_HASH160_LENGTH:]
    if checksum != _checksum(version, hash160):
        raise InvalidPrincipal(f"{address!r} has a bad checksum")
    if encode_standard_principal(version, hash160) != address:
        raise InvalidPrincipal(f"{address!r} is not in canonical c32 form")
    return version, hash160


def is_contract_name(name: str) -> bool:
    return bool(_CONTRACT_NAME.fullmatch(name))


def validate_contract_id(contract_id: str) -> str:
    address, dot, name = contract_id.partition(".")
    if not dot:
        raise InvalidPrincipal(f"{contract_id!r} is not of the form ADDRESS.contract-name")
    decode_standard_principal(address)
    if not is_contract_name(name):
        raise InvalidPrincipal(f"{name!r} is not a valid contract name")
    return contract_id


def validate_asset_identifier(asset_identifier: str) -> str:
    """``SP….contract::asset-name``: a contract and one of its fungible or non-fungible assets."""
    contract_id, colons, name = asset_identifier.partition("::")
    if not colons:
        raise InvalidPrincipal(f"{asset_identifier!r} is not of the form ADDRESS.contract-name::asset-name")
    validate_contract_id(contract_id)
    if not is_contract_name(name):
        raise InvalidPrincipal(f"{name!r} is not a valid asset name")
    return asset_identifier


def validate_principal(principal: str) -> str:
    """Accept a standard principal (``SP…``) or a contract principal (``SP….name``)."""
    if "." in principal:
        return validate_contract_id(principal)
    decode_standard_principal(principal)
    return principal


def is_principal(text: str) -> bool:
    try:
        validate_principal(text)
    except InvalidPrincipal:
        return False
    return True
