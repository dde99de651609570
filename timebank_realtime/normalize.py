"""Turn a validated Chainhook payload (v1 or 2.0) into event rows with one shared vocabulary.

Pure code: no I/O. The rules (which field becomes which column, how 2.0 operations pair into
transfers) are documented in the README's "Normalization" section; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .clarity import ClarityDecodeError, decode_hex
from .errors import PayloadError
from .events import Delivery, EventRow
from .payload import AssetIdentifier as _AssetIdentifier
from .payload import LoosePrincipal as _LoosePrincipal
from .payload import (
    Payload,
    V1Block,
    V1Event,
    V1Payload,
    V1Transaction,
    V2Block,
    V2Operation,
    V2Payload,
    V2Transaction,
    json_path,
)
from .payload import Principal as _Principal
from .principals import is_principal

# Transaction rows have no event of their own; -1 keeps them apart from real event positions.
TRANSACTION_ROW_INDEX = -1


def normalize(payload: Payload) -> Delivery:
    if isinstance(payload, V1Payload):
        return _normalize_v1(payload)
    return _normalize_v2(payload)


# --- shared helpers -------------------------------------------------------------------------


def _timestamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _text(value: Any) -> str:
    """A string field of loosely typed metadata; anything else reads as empty. (Its length is bounded
    by the payload models.)"""
    return value if isinstance(value, str) else ""


def _contract_of_asset(asset_identifier: str) -> str:
    """``SP….token::name`` -> ``SP….token``."""
    return asset_identifier.split("::", 1)[0]


def principals_in(value: Any) -> Iterator[str]:
    """Every checksum-valid principal string found anywhere inside a decoded value."""
    if isinstance(value, str):
        if value.startswith("S") and is_principal(value):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from principals_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from principals_in(item)


def _addresses(*groups: Iterable[str | None]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for address in group:
            if address:
                seen.setdefault(address, None)
    return tuple(seen)


def _with_decoded_value(data: dict[str, Any]) -> dict[str, Any]:
    """Add ``value`` decoded from ``raw_value`` when Chainhook sent only hex."""
    raw = data.get("raw_value")
    if "value" in data or not isinstance(raw, str):
        return data
    try:
        return {**data, "value": decode_hex(raw)}
    except ClarityDecodeError as error:
        # A value we cannot decode must not cost the delivery: keep the hex and say why.
        return {**data, "value": None, "decode_error": str(error)}


# --- Chainhook v1 ---------------------------------------------------------------------------


class _EventData(BaseModel):
    model_config = ConfigDict(extra="allow")
    # Read as affected addresses (an indexed column) whatever the event type.
    sender: _LoosePrincipal = None
    recipient: _LoosePrincipal = None
    locked_address: _LoosePrincipal = None


class _Transfer(_EventData):
    sender: _Principal
    recipient: _Principal


class _Mint(_EventData):
    recipient: _Principal


class _Burn(_EventData):
    sender: _Principal


class _Amount(_EventData):
    amount: str


class _Asset(_EventData):
    asset_identifier: _AssetIdentifier


class _NftAsset(_Asset):
    # Decoded mode: the class, while asset_identifier holds the token's value. Absent in raw mode.
    asset_class_identifier: _AssetIdentifier = ""


class _StxTransfer(_Transfer, _Amount):
    pass


class _StxMint(_Mint, _Amount):
    pass


class _StxBurn(_Burn, _Amount):
    pass


class _StxLock(_EventData):
    locked_address: _Principal
    locked_amount: str
    unlock_height: str | int


class _FtTransfer(_Transfer, _Amount, _Asset):
    pass


class _FtMint(_Mint, _Amount, _Asset):
    pass


class _FtBurn(_Burn, _Amount, _Asset):
    pass


class _NftTransfer(_Transfer, _NftAsset):
    pass


class _NftMint(_Mint, _NftAsset):
    pass


class _NftBurn(_Burn, _NftAsset):
    pass


class _ContractEvent(_EventData):
    contract_identifier: _Principal


class _Print(_ContractEvent):
    topic: str


V1_EVENT_TYPES: dict[str, tuple[str, type[_EventData]]] = {
    "SmartContractEvent": ("print_event", _Print),
    "STXTransferEvent": ("stx_transfer_event", _StxTransfer),
    "STXMintEvent": ("stx_mint_event", _StxMint),
    "STXBurnEvent": ("stx_burn_event", _StxBurn),
    "STXLockEvent": ("stx_lock_event", _StxLock),
    "FTTransferEvent": ("ft_transfer_event", _FtTransfer),
    "FTMintEvent": ("ft_mint_event", _FtMint),
    "FTBurnEvent": ("ft_burn_event", _FtBurn),
    "NFTTransferEvent": ("nft_transfer_event", _NftTransfer),
    "NFTMintEvent": ("nft_mint_event", _NftMint),
    "NFTBurnEvent": ("nft_burn_event", _NftBurn),
    "DataVarSetEvent": ("data_var_set_event", _ContractEvent),
    "DataMapInsertEvent": ("data_map_insert_event", _ContractEvent),
    "DataMapUpdateEvent": ("data_map_update_event", _ContractEvent),
    "DataMapDeleteEvent": ("data_map_delete_event", _ContractEvent),
}

_V1_TRANSACTION_ROWS = {"ContractCall": "contract_call", "ContractDeployment": "contract_deployment"}


@dataclass(frozen=True, slots=True)
class _TxContext:
    block: V1Block | V2Block
    tx_hash: str
    tx_index: int
    sender: str
    success: bool
    contract_id: str

    def row(self, event_index: int, contract_id: str, event_type: str, data: dict[str, Any],
            addresses: tuple[str, ...]) -> EventRow:
        return EventRow(
            tx_hash=self.tx_hash,
            block_height=self.block.block_identifier.index,
            block_hash=self.block.block_identifier.hash,
            tx_index=self.tx_index,
            event_index=event_index,
            contract_id=contract_id,
            event_type=event_type,
            event_data=data,
            affected_addresses=addresses,
            success=self.success,
            timestamp=_timestamp(self.block.timestamp),
        )


def _normalize_v1(payload: V1Payload) -> Delivery:
    rows: list[EventRow] = []
    skipped = 0
    for block_number, block in enumerate(payload.apply):
        for tx_number, tx in enumerate(block.transactions):
            path = f"$.apply[{block_number}].transactions[{tx_number}]"
            tx_rows, tx_skipped = v1_transaction_rows(block, tx, tx_number, path)
            rows.extend(tx_rows)
            skipped += tx_skipped
    return Delivery(
        format="v1",
        chainhook_uuid=payload.chainhook.uuid,
        rollback_block_hashes=tuple(b.block_identifier.hash for b in payload.rollback),
        events=tuple(rows),
        apply_blocks=len(payload.apply),
        skipped_events=skipped,
        tip_height=_tip(payload.apply),
    )


def _tip(blocks: list[V1Block] | list[V2Block]) -> int | None:
    return max((b.block_identifier.index for b in blocks), default=None)


def _v1_called_contract(tx: V1Transaction) -> str:
    contract = (tx.metadata.kind.data or {}).get("contract_identifier")
    return contract if isinstance(contract, str) else ""


def v1_transaction_rows(block: V1Block, tx: V1Transaction, tx_number: int,
                        path: str) -> tuple[list[EventRow], int]:
    """One transaction's rows in event order, and how many of its events were skipped (also used
    by the streamed path, one transaction at a time)."""
    meta = tx.metadata
    context = _TxContext(
        block=block,
        tx_hash=tx.transaction_identifier.hash,
        # Pre-2024 payloads may lack the position; the order in the block is the same thing.
        tx_index=meta.position.index if meta.position else tx_number,
        sender=meta.sender,
        success=meta.success,
        contract_id=_v1_called_contract(tx),
    )
    rows: list[EventRow] = []
    row_type = _V1_TRANSACTION_ROWS.get(meta.kind.type)
    if row_type is not None:
        rows.append(_v1_transaction_row(context, row_type, tx))
    skipped = 0
    for event_number, event in enumerate(meta.receipt.events):
        row = _v1_event_row(context, event, event_number, f"{path}.metadata.receipt.events[{event_number}]")
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    # Chainhook does not sort receipt events by position; the log (and every client) sees them in order.
    rows.sort(key=lambda row: row.event_index)
    return rows, skipped


def _v1_transaction_row(context: _TxContext, row_type: str, tx: V1Transaction) -> EventRow:
    kind_data = dict(tx.metadata.kind.data or {})
    # Deployment source code can be hundreds of KB; the transaction hash leads to it.
    kind_data.pop("code", None)
    data = {"kind": tx.metadata.kind.type, **kind_data, "result": tx.metadata.result}
    return context.row(TRANSACTION_ROW_INDEX, context.contract_id, row_type, data,
                       _addresses([context.sender]))


def _v1_event_row(context: _TxContext, event: V1Event, event_number: int, path: str) -> EventRow | None:
    known = V1_EVENT_TYPES.get(event.type)
    if known is None:
        return None
    event_type, model = known
    try:
        model.model_validate(event.data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        raise PayloadError(first["msg"], path=path + json_path(("data", *first["loc"]))[1:]) from None
    # Before 2024 events had no block-wide position; their order within the transaction stands in.
    event_index = event.position.index if event.position else event_number
    data = _canonical_event_data(event_type, event.data)
    return context.row(event_index, _event_contract(event_type, data, context), event_type, data,
                       _event_addresses(data, context.sender))


def _canonical_event_data(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    if event_type == "print_event":
        return _with_decoded_value(data)
    if event_type.startswith("nft_"):
        # Raw mode names the class in asset_identifier; decoded mode moves it to
        # asset_class_identifier and puts the token's value in asset_identifier.
        if "asset_class_identifier" not in data:
            data = {**data, "asset_class_identifier": data["asset_identifier"]}
        return _with_decoded_value(data)
    return data


def _event_contract(event_type: str, data: dict[str, Any], context: _TxContext) -> str:
    if event_type.startswith("stx_"):
        return context.contract_id
    if event_type.startswith("nft_"):
        return _contract_of_asset(data["asset_class_identifier"])
    if event_type.startswith("ft_"):
        return _contract_of_asset(data["asset_identifier"])
    contract = data.get("contract_identifier")
    return contract if isinstance(contract, str) else ""


def _event_addresses(data: dict[str, Any], sender: str) -> tuple[str, ...]:
    named = (data.get(key) for key in ("sender", "recipient", "locked_address"))
    return _addresses(
        (a for a in named if isinstance(a, str)),
        principals_in(data.get("value")),
        [sender],
    )


# --- Chainhooks 2.0 -------------------------------------------------------------------------

_V2_TRANSACTION_ROWS = {"contract_call": "contract_call", "contract_deploy": "contract_deployment"}
_V2_CONTRACT_OPERATIONS = {"contract_call", "contract_deploy"}


def _normalize_v2(payload: V2Payload) -> Delivery:
    rows: list[EventRow] = []
    for block in payload.event.apply:
        for tx in block.transactions:
            rows.extend(v2_transaction_rows(block, tx))
    return Delivery(
        format="v2",
        chainhook_uuid=payload.chainhook.uuid,
        rollback_block_hashes=tuple(b.block_identifier.hash for b in payload.event.rollback),
        events=tuple(rows),
        apply_blocks=len(payload.event.apply),
        skipped_events=0,
        tip_height=_tip(payload.event.apply),
    )


def _v2_contract(tx: V2Transaction) -> str:
    for operation in tx.operations:
        if operation.type in _V2_CONTRACT_OPERATIONS and operation.metadata:
            contract = operation.metadata.get("contract_identifier")
            if isinstance(contract, str):
                return contract
    return ""


def v2_transaction_rows(block: V2Block, tx: V2Transaction) -> list[EventRow]:
    meta = tx.metadata
    context = _TxContext(
        block=block,
        tx_hash=tx.transaction_identifier.hash,
        tx_index=meta.position.index,
        sender=meta.sender_address,
        success=meta.status == "success",
        contract_id=_v2_contract(tx),
    )
    rows: list[EventRow] = []
    row_type = _V2_TRANSACTION_ROWS.get(meta.type)
    if row_type is not None:
        rows.append(_v2_transaction_row(context, row_type, tx))
    # As in v1, a transaction that did not succeed has no events.
    if context.success:
        rows.extend(_v2_event_rows(context, tx.operations))
    return rows


def _v2_transaction_row(context: _TxContext, row_type: str, tx: V2Transaction) -> EventRow:
    data: dict[str, Any] = {"kind": tx.metadata.type, "result": _v2_result(tx.metadata.result)}
    for operation in tx.operations:
        if operation.type in _V2_CONTRACT_OPERATIONS and operation.metadata:
            details = {k: v for k, v in operation.metadata.items() if k not in ("source_code", "abi")}
            if "function_name" in details:
                details["method"] = details.pop("function_name")
            data.update(details)
            break
    return context.row(TRANSACTION_ROW_INDEX, context.contract_id, row_type, data,
                       _addresses([context.sender]))


def _v2_result(result: str | dict[str, Any] | None) -> str | None:
    if isinstance(result, dict):
        repr_ = result.get("repr")
        return repr_ if isinstance(repr_, str) else None
    return result


@dataclass(slots=True)
class _TokenMove:
    """One token_* operation read as an asset movement."""

    operation: V2Operation
    asset_kind: str  # "stx" | "ft" | "nft"
    asset_identifier: str
    nft_value: str | None
    amount: int
    account: str

    @property
    def pairing_key(self) -> tuple[str, str, str | None, int]:
        return (self.asset_kind, self.asset_identifier, self.nft_value, abs(self.amount))


def _token_move(operation: V2Operation) -> _TokenMove:
    assert operation.amount is not None and operation.account is not None  # checked by caller
    meta = operation.amount.currency.metadata or {}
    token_type = meta.get("token_type")
    asset_kind = token_type if token_type in ("ft", "nft") else "stx"
    asset_identifier = meta.get("asset_identifier") or ""
    value = meta.get("value")
    return _TokenMove(
        operation=operation,
        asset_kind=asset_kind,
        asset_identifier=asset_identifier if isinstance(asset_identifier, str) else "",
        nft_value=value if isinstance(value, str) else None,
        amount=int(operation.amount.value),
        account=operation.account.address,
    )


def _v2_event_rows(context: _TxContext, operations: list[V2Operation]) -> list[EventRow]:
    rows: list[EventRow] = []
    pending: list[_TokenMove] = []
    for operation in operations:
        if operation.type == "token_transfer" and operation.amount and operation.account:
            move = _token_move(operation)
            partner = next((p for p in pending if p.pairing_key == move.pairing_key
                            and (p.amount < 0) != (move.amount < 0)), None)
            if partner is None:
                pending.append(move)
            else:
                pending.remove(partner)
                debit, credit = (partner, move) if partner.amount < 0 else (move, partner)
                rows.append(_v2_transfer_row(context, debit, credit))
        else:
            row = _v2_single_operation_row(context, operation)
            if row is not None:
                rows.append(row)
    # A debit or credit with no partner still records the movement, with the other side unknown.
    for move in pending:
        if move.amount < 0:
            rows.append(_v2_transfer_row(context, move, None))
        else:
            rows.append(_v2_transfer_row(context, None, move))
    rows.sort(key=lambda row: row.event_index)
    return rows


def _asset_fields(move: _TokenMove) -> dict[str, Any]:
    if move.asset_kind == "stx":
        return {"amount": str(abs(move.amount))}
    if move.asset_kind == "ft":
        return {"asset_identifier": move.asset_identifier, "amount": str(abs(move.amount))}
    fields: dict[str, Any] = {
        "asset_identifier": move.asset_identifier,
        "asset_class_identifier": move.asset_identifier,
    }
    if move.nft_value is not None:
        fields["raw_value"] = move.nft_value
    return _with_decoded_value(fields)


def _asset_contract(move: _TokenMove, context: _TxContext) -> str:
    return context.contract_id if move.asset_kind == "stx" else _contract_of_asset(move.asset_identifier)


def _v2_transfer_row(context: _TxContext, debit: _TokenMove | None, credit: _TokenMove | None) -> EventRow:
    move = debit or credit
    assert move is not None
    data = _asset_fields(move)
    data["sender"] = debit.account if debit else ""
    data["recipient"] = credit.account if credit else ""
    memo = (move.operation.metadata or {}).get("memo")
    if memo is not None:
        data["memo"] = memo
    return context.row(move.operation.operation_identifier.index, _asset_contract(move, context),
                       f"{move.asset_kind}_transfer_event", data,
                       _addresses([data["sender"], data["recipient"], context.sender]))


def _v2_single_operation_row(context: _TxContext, operation: V2Operation) -> EventRow | None:
    index = operation.operation_identifier.index
    meta = operation.metadata or {}
    if operation.type in ("token_mint", "token_burn") and operation.amount and operation.account:
        move = _token_move(operation)
        side = "recipient" if operation.type == "token_mint" else "sender"
        data = {**_asset_fields(move), side: move.account}
        suffix = "mint" if operation.type == "token_mint" else "burn"
        return context.row(index, _asset_contract(move, context), f"{move.asset_kind}_{suffix}_event",
                           data, _addresses([move.account, context.sender]))
    if operation.type == "stx_lock" and operation.amount:
        data = {
            "locked_address": _text(meta.get("locked_address")),
            "locked_amount": str(abs(int(operation.amount.value))),
            "unlock_height": str(meta.get("unlock_height", "")),
            "contract_name": meta.get("contract_name"),
        }
        return context.row(index, context.contract_id, "stx_lock_event", data,
                           _addresses([data["locked_address"], context.sender]))
    if operation.type == "contract_log":
        return _v2_print_row(context, index, meta)
    # fee, coinbase, tenure_change, poison_microblock, contract_call, contract_deploy: no event row.
    return None


def _v2_print_row(context: _TxContext, index: int, meta: Mapping[str, Any]) -> EventRow:
    value = meta.get("value")
    data: dict[str, Any] = {
        "contract_identifier": _text(meta.get("contract_identifier")),
        "topic": str(meta.get("topic", "")),
    }
    if isinstance(value, dict):
        data["raw_value"] = value.get("hex")
        if "repr" in value:
            data["repr"] = value["repr"]
    else:
        data["raw_value"] = value
    data = _with_decoded_value(data)
    return context.row(index, data["contract_identifier"], "print_event", data,
                       _addresses(principals_in(data.get("value")), [context.sender]))
