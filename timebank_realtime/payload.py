"""Pydantic models of the two Chainhook webhook formats, and detection of which one a body is.

Only the fields we read are modelled; everything else Chainhook sends is allowed and ignored,
so that a newer Chainhook adding fields never makes us refuse a delivery.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import PayloadError


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class BlockIdentifier(_Lenient):
    index: int = Field(ge=0)
    hash: str


class TransactionIdentifier(_Lenient):
    hash: str = Field(min_length=1)


class Position(_Lenient):
    index: int = Field(ge=0)


# --- Chainhook v1 (self-hosted) -------------------------------------------------------------


class V1Event(_Lenient):
    type: str
    position: Position | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class V1Receipt(_Lenient):
    events: list[V1Event] = Field(default_factory=list)


class V1TransactionKind(_Lenient):
    type: str
    data: dict[str, Any] | None = None


class V1TransactionMetadata(_Lenient):
    success: bool
    sender: str
    result: str | None = None
    kind: V1TransactionKind
    receipt: V1Receipt
    position: Position | None = None


class V1Transaction(_Lenient):
    transaction_identifier: TransactionIdentifier
    metadata: V1TransactionMetadata


class V1Block(_Lenient):
    block_identifier: BlockIdentifier
    timestamp: int = Field(ge=0)
    transactions: list[V1Transaction]


class V1Chainhook(_Lenient):
    uuid: str
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
    metadata: dict[str, Any] | None = None


class V2Amount(_Lenient):
    value: str | int
    currency: V2Currency


class V2Account(_Lenient):
    address: str


class V2OperationIdentifier(_Lenient):
    index: int = Field(ge=0)


class V2Operation(_Lenient):
    type: str
    operation_identifier: V2OperationIdentifier
    status: str | None = None
    account: V2Account | None = None
    amount: V2Amount | None = None
    metadata: dict[str, Any] | None = None


class V2TransactionMetadata(_Lenient):
    type: str
    status: str
    sender_address: str
    position: Position
    result: str | dict[str, Any] | None = None


class V2Transaction(_Lenient):
    transaction_identifier: TransactionIdentifier
    operations: list[V2Operation]
    metadata: V2TransactionMetadata


class V2Block(_Lenient):
    block_identifier: BlockIdentifier
    timestamp: int = Field(ge=0)
    transactions: list[V2Transaction]


class V2Event(_Lenient):
    chain: Literal["stacks"]
    network: str
    apply: list[V2Block]
    rollback: list[V2Block]


class V2Chainhook(_Lenient):
    uuid: str
    name: str | None = None


class V2Payload(_Lenient):
    event: V2Event
    chainhook: V2Chainhook


Payload = V1Payload | V2Payload

_V1 = TypeAdapter(V1Payload)
_V2 = TypeAdapter(V2Payload)


def json_path(location: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a JSON path: ``$.apply[0].transactions[2].metadata``."""
    path = "$"
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


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
        first = error.errors(include_url=False)[0]
        raise PayloadError(first["msg"], path=json_path(tuple(first["loc"]))) from None
    return payload
