"""Pydantic models of the two Chainhook webhook formats, detection of which one a body is, and how a
validation failure is reported (PayloadError, with the JSON path of the first problem).

Only the fields we read are modelled; everything else Chainhook sends is allowed and ignored,
so that a newer Chainhook adding fields never makes us refuse a delivery.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from ..errors import PayloadError

# Limits on the values that reach indexed columns or typed conversions. A value the models accept must
# store: past these PostgreSQL (int64/int32 columns, btree rows of at most ~2.7 KB) or Python
# (datetime) would fail the whole delivery with a 5xx, and Chainhook would stop the predicate.
MAX_BLOCK_HEIGHT = 2**63 - 1  # block_height is BIGINT
MAX_POSITION = 2**31 - 1  # tx_index / event_index are INTEGER
MAX_TIMESTAMP = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime holds
# A principal: "S", the version character, up to 39 c32 characters (hash160 + checksum), then
# optionally "." and a contract name of at most 128 characters (Clarity 1).
MAX_PRINCIPAL_CHARS = 41 + 1 + 128
# An asset identifier: a contract principal, "::", an asset name (a Clarity name, at most 128).
MAX_ASSET_IDENTIFIER_CHARS = MAX_PRINCIPAL_CHARS + 2 + 128
MAX_UUID_CHARS = 128  # chainhook uuids are 36; names the deliveries table's primary key
MAX_NETWORK_CHARS = 64  # "mainnet", "testnet"; a filter value, so kept short
# Token amounts: Clarity's largest integer (u128) has 39 digits.
MAX_AMOUNT_DIGITS = 40

# Block and transaction hashes: "0x" and 32 bytes in hex. Chainhook's own test vectors use a bare
# "0x", which stays accepted; nothing longer than 32 bytes is.
Hash = Annotated[str, StringConstraints(pattern=r"^0x(?:[0-9a-fA-F]{64})?$")]
Principal = Annotated[str, StringConstraints(max_length=MAX_PRINCIPAL_CHARS)]
AssetIdentifier = Annotated[str, StringConstraints(max_length=MAX_ASSET_IDENTIFIER_CHARS)]
Uuid = Annotated[str, StringConstraints(max_length=MAX_UUID_CHARS)]
Network = Annotated[str, StringConstraints(max_length=MAX_NETWORK_CHARS)]
Height = Annotated[int, Field(ge=0, le=MAX_BLOCK_HEIGHT)]
Timestamp = Annotated[int, Field(ge=0, le=MAX_TIMESTAMP)]
_AMOUNT_TEXT = re.compile(rf"-?[0-9]{{1,{MAX_AMOUNT_DIGITS}}}")


def _amount(value: Any) -> int | str:
    """An integer, or its decimal digits as a string ("1.5" and "abc" are not amounts)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**MAX_AMOUNT_DIGITS:
        return value
    if isinstance(value, str) and _AMOUNT_TEXT.fullmatch(value):
        return value
    raise ValueError(f"an amount is an integer of at most {MAX_AMOUNT_DIGITS} digits, or a string of them")


Amount = Annotated[int | str, PlainValidator(_amount)]


def _at_most(limit: int) -> Callable[[Any], Any]:
    """Loosely typed metadata: any JSON value, but a string no longer than ``limit`` characters."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            raise ValueError(f"a string of at most {limit} characters is expected here")
        return value

    return check


LoosePrincipal = Annotated[Any, PlainValidator(_at_most(MAX_PRINCIPAL_CHARS))]
LooseAssetIdentifier = Annotated[Any, PlainValidator(_at_most(MAX_ASSET_IDENTIFIER_CHARS))]


class _LooseMetadata(TypedDict, total=False):
    """A dict of metadata whose few keys that reach indexed columns are bounded; the rest pass as they are."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]


class KindData(_LooseMetadata, total=False):
    contract_identifier: LoosePrincipal


class OperationMetadata(_LooseMetadata, total=False):
    contract_identifier: LoosePrincipal
    locked_address: LoosePrincipal


class CurrencyMetadata(_LooseMetadata, total=False):
    asset_identifier: LooseAssetIdentifier


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class BlockIdentifier(_Lenient):
    index: Height
    hash: Hash


class TransactionIdentifier(_Lenient):
    hash: Hash


class Position(_Lenient):
    index: int = Field(ge=0, le=MAX_POSITION)


# --- Chainhook v1 (self-hosted) -------------------------------------------------------------


class V1Event(_Lenient):
    type: str
    position: Position | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class V1Receipt(_Lenient):
    events: list[V1Event] = Field(default_factory=list)


class V1TransactionKind(_Lenient):
    type: str
    data: KindData | None = None


class V1TransactionMetadata(_Lenient):
    success: bool
    sender: Principal
    result: str | None = None
    kind: V1TransactionKind
    receipt: V1Receipt
    position: Position | None = None


class V1Transaction(_Lenient):
    transaction_identifier: TransactionIdentifier
    metadata: V1TransactionMetadata


class V1Block(_Lenient):
    block_identifier: BlockIdentifier
    timestamp: Timestamp
    transactions: list[V1Transaction]


class V1Chainhook(_Lenient):
    uuid: Uuid
    predicate: dict[str, Any] | None = None
    is_streaming_blocks: bool | None = None


class V1Payload(_Lenient):
    apply: list[V1Block]
    rollback: list[V1Block]
    chainhook: V1Chainhook
    # Signer messages (Chainhook >= 1.9); they carry no transaction events and are not stored.
    events: list[Any] = Field(default_factory=list)


# --- Chainhooks 2.0 (hosted) ----------------------------------------------------------------


class V2Currency(_Lenient):
    symbol: str = ""
    decimals: int = 0
    metadata: CurrencyMetadata | None = None


class V2Amount(_Lenient):
    value: Amount
    currency: V2Currency


class V2Account(_Lenient):
    address: Principal


class V2OperationIdentifier(_Lenient):
    index: int = Field(ge=0, le=MAX_POSITION)


class V2Operation(_Lenient):
    type: str
    operation_identifier: V2OperationIdentifier
    status: str | None = None
    account: V2Account | None = None
    amount: V2Amount | None = None
    metadata: OperationMetadata | None = None


class V2TransactionMetadata(_Lenient):
    type: str
    status: str
    sender_address: Principal
    position: Position
    result: str | dict[str, Any] | None = None


class V2Transaction(_Lenient):
    transaction_identifier: TransactionIdentifier
    operations: list[V2Operation]
    metadata: V2TransactionMetadata


class V2Block(_Lenient):
    block_identifier: BlockIdentifier
    timestamp: Timestamp
    transactions: list[V2Transaction]


class V2Event(_Lenient):
    chain: Literal["stacks"]
    network: Network
    apply: list[V2Block]
    rollback: list[V2Block]


class V2Chainhook(_Lenient):
    uuid: Uuid
    name: str | None = None


class V2Payload(_Lenient):
    event: V2Event
    chainhook: V2Chainhook


Payload = V1Payload | V2Payload

_V1 = TypeAdapter(V1Payload)
_V2 = TypeAdapter(V2Payload)


def _json_path(location: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a JSON path: ``$.apply[0].transactions[2].metadata``."""
    path = "$"
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def payload_error(error: ValidationError, path: str = "$") -> PayloadError:
    """The first problem pydantic found, named by its JSON path; ``path`` is where the validated
    value sits in the body (its root by default)."""
    first = error.errors(include_url=False)[0]
    return PayloadError(first["msg"], path=path + _json_path(tuple(first["loc"]))[1:])


def parse_payload(body: Any) -> Payload:
    """Detect the format from the body's shape and validate it; PayloadError names the first problem."""
    if not isinstance(body, dict):
        raise PayloadError("a Chainhook payload is a JSON object", path="$")
    if "event" in body:
        adapter: TypeAdapter[Any] = _V2
    elif "apply" in body or "rollback" in body:
        adapter = _V1
    else:
        raise PayloadError(
            "neither a Chainhook v1 payload (apply/rollback/chainhook) "
            "nor a Chainhooks 2.0 payload (event/chainhook)",
            path="$",
        )
    try:
        payload: Payload = adapter.validate_python(body)
    except ValidationError as error:
        raise payload_error(error) from None
    return payload
