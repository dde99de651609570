"""Chainhooks 2.0 (hosted) payloads into event rows: operations become the same rows v1 events do,
with a debit and a credit of the same asset and amount paired into one transfer.

Pure code: no I/O. The rules are documented in docs/normalization.md; keep the two in
step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..events import Delivery, EventRow
from .models import V2Block, V2Operation, V2Payload, V2Transaction
from .networks import NO_OVERRIDES, first_network, resolve_network
from .rows import (
    TRANSACTION_ROW_INDEX,
    TxContext,
    addresses,
    block_summaries,
    contract_of_asset,
    events_per_block,
    principals_in,
    tip_height,
    with_decoded_value,
)

_TRANSACTION_ROWS = {"contract_call": "contract_call", "contract_deploy": "contract_deployment"}
_CONTRACT_OPERATIONS = {"contract_call", "contract_deploy"}


def _text(value: Any) -> str:
    """A string field of loosely typed metadata; anything else reads as empty. (Its length is bounded
    by the payload models.)"""
    return value if isinstance(value, str) else ""


def normalize(payload: V2Payload, networks: Mapping[str, str] = NO_OVERRIDES) -> Delivery:
    """``networks``: the operator's network for a Chainhook uuid (see networks.py)."""
    rows: list[EventRow] = []
    for block in payload.event.apply:
        for tx in block.transactions:
            rows.extend(transaction_rows(block, tx))
    delivery = Delivery(
        format="v2",
        chainhook_uuid=payload.chainhook.uuid,
        network=resolve_network(chainhook_uuid=payload.chainhook.uuid, named=payload.event.network,
                                overrides=networks, derived=first_network(_senders(payload))),
        rollback_block_hashes=tuple(b.block_identifier.hash for b in payload.event.rollback),
        events=tuple(rows),
        apply_blocks=len(payload.event.apply),
        skipped_events=0,
        tip_height=tip_height(b.block_identifier.index for b in payload.event.apply),
    )
    delivery.blocks = block_summaries(payload.event.apply, events_per_block(delivery.distinct_events))
    return delivery


def _senders(payload: V2Payload) -> Iterator[str]:
    for block in (*payload.event.apply, *payload.event.rollback):
        for tx in block.transactions:
            yield tx.metadata.sender_address


def _called_contract(tx: V2Transaction) -> str:
    for operation in tx.operations:
        if operation.type in _CONTRACT_OPERATIONS and operation.metadata:
            contract = operation.metadata.get("contract_identifier")
            if isinstance(contract, str):
                return contract
    return ""


def transaction_rows(block: V2Block, tx: V2Transaction) -> list[EventRow]:
    meta = tx.metadata
    context = TxContext(
        block=block,
        tx_hash=tx.transaction_identifier.hash,
        tx_index=meta.position.index,
        sender=meta.sender_address,
        success=meta.status == "success",
        contract_id=_called_contract(tx),
    )
    rows: list[EventRow] = []
    row_type = _TRANSACTION_ROWS.get(meta.type)
    if row_type is not None:
        rows.append(_transaction_row(context, row_type, tx))
    # As in v1, a transaction that did not succeed has no events.
    if context.success:
        rows.extend(_event_rows(context, tx.operations))
    return rows


def _transaction_row(context: TxContext, row_type: str, tx: V2Transaction) -> EventRow:
    data: dict[str, Any] = {"kind": tx.metadata.type, "result": _result(tx.metadata.result)}
    for operation in tx.operations:
        if operation.type in _CONTRACT_OPERATIONS and operation.metadata:
            details = {k: v for k, v in operation.metadata.items() if k not in ("source_code", "abi")}
            if "function_name" in details:
                details["method"] = details.pop("function_name")
            data.update(details)
            break
    return context.row(TRANSACTION_ROW_INDEX, context.contract_id, row_type, data,
                       addresses([context.sender]))


def _result(result: str | dict[str, Any] | None) -> str | None:
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


def _event_rows(context: TxContext, operations: list[V2Operation]) -> list[EventRow]:
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
                rows.append(_transfer_row(context, debit, credit))
        else:
            row = _single_operation_row(context, operation)
            if row is not None:
                rows.append(row)
    # A debit or credit with no partner still records the movement, with the other side unknown.
    for move in pending:
        if move.amount < 0:
            rows.append(_transfer_row(context, move, None))
        else:
            rows.append(_transfer_row(context, None, move))
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
    return with_decoded_value(fields)


def _asset_contract(move: _TokenMove, context: TxContext) -> str:
    return context.contract_id if move.asset_kind == "stx" else contract_of_asset(move.asset_identifier)


def _transfer_row(context: TxContext, debit: _TokenMove | None, credit: _TokenMove | None) -> EventRow:
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
                       addresses([data["sender"], data["recipient"], context.sender]))


def _single_operation_row(context: TxContext, operation: V2Operation) -> EventRow | None:
    index = operation.operation_identifier.index
    meta = operation.metadata or {}
    if operation.type in ("token_mint", "token_burn") and operation.amount and operation.account:
        move = _token_move(operation)
        side = "recipient" if operation.type == "token_mint" else "sender"
        data = {**_asset_fields(move), side: move.account}
        suffix = "mint" if operation.type == "token_mint" else "burn"
        return context.row(index, _asset_contract(move, context), f"{move.asset_kind}_{suffix}_event",
                           data, addresses([move.account, context.sender]))
    if operation.type == "stx_lock" and operation.amount:
        data = {
            "locked_address": _text(meta.get("locked_address")),
            "locked_amount": str(abs(int(operation.amount.value))),
            "unlock_height": str(meta.get("unlock_height", "")),
            "contract_name": meta.get("contract_name"),
        }
        return context.row(index, context.contract_id, "stx_lock_event", data,
                           addresses([data["locked_address"], context.sender]))
    if operation.type == "contract_log":
        return _print_row(context, index, meta)
    # fee, coinbase, tenure_change, poison_microblock, contract_call, contract_deploy: no event row.
    return None


def _print_row(context: TxContext, index: int, meta: Mapping[str, Any]) -> EventRow:
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
    data = with_decoded_value(data)
    return context.row(index, data["contract_identifier"], "print_event", data,
                       addresses(principals_in(data.get("value")), [context.sender]))
