"""Chainhook v1 (self-hosted) payloads into event rows: each receipt event of a known type becomes a
row, and contract calls and deployments get a row of their own.

Pure code: no I/O. The rules are documented in docs/normalization.md; keep the two in
step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..events import Delivery, EventRow
from .models import AssetIdentifier as _AssetIdentifier
from .models import LoosePrincipal as _LoosePrincipal
from .models import Principal as _Principal
from .models import V1Block, V1Event, V1Payload, V1Transaction, payload_error
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

_TRANSACTION_ROWS = {"ContractCall": "contract_call", "ContractDeployment": "contract_deployment"}


def normalize(payload: V1Payload, networks: Mapping[str, str] = NO_OVERRIDES) -> Delivery:
    """``networks``: the operator's network for a Chainhook uuid (see networks.py)."""
    rows: list[EventRow] = []
    skipped = 0
    for block_number, block in enumerate(payload.apply):
        for tx_number, tx in enumerate(block.transactions):
            path = f"$.apply[{block_number}].transactions[{tx_number}]"
            tx_rows, tx_skipped = transaction_rows(block, tx, tx_number, path)
            rows.extend(tx_rows)
            skipped += tx_skipped
    delivery = Delivery(
        format="v1",
        chainhook_uuid=payload.chainhook.uuid,
        network=resolve_network(chainhook_uuid=payload.chainhook.uuid, named=None, overrides=networks,
                                derived=first_network(_senders(payload))),
        rollback_block_hashes=tuple(b.block_identifier.hash for b in payload.rollback),
        events=tuple(rows),
        apply_blocks=len(payload.apply),
        skipped_events=skipped,
        tip_height=tip_height(b.block_identifier.index for b in payload.apply),
    )
    delivery.blocks = block_summaries(payload.apply, events_per_block(delivery.distinct_events))
    return delivery


def _senders(payload: V1Payload) -> Iterator[str]:
    for block in (*payload.apply, *payload.rollback):
        for tx in block.transactions:
            yield tx.metadata.sender


def _called_contract(tx: V1Transaction) -> str:
    contract = (tx.metadata.kind.data or {}).get("contract_identifier")
    return contract if isinstance(contract, str) else ""


def transaction_rows(block: V1Block, tx: V1Transaction, tx_number: int, path: str) -> tuple[list[EventRow], int]:
    """One transaction's rows in event order, and how many of its events were skipped (also used
    by the streamed path, one transaction at a time)."""
    meta = tx.metadata
    context = TxContext(
        block=block,
        tx_hash=tx.transaction_identifier.hash,
        # Pre-2024 payloads may lack the position; the order in the block is the same thing.
        tx_index=meta.position.index if meta.position else tx_number,
        sender=meta.sender,
        success=meta.success,
        contract_id=_called_contract(tx),
    )
    rows: list[EventRow] = []
    row_type = _TRANSACTION_ROWS.get(meta.kind.type)
    if row_type is not None:
        rows.append(_transaction_row(context, row_type, tx))
    skipped = 0
    for event_number, event in enumerate(meta.receipt.events):
        row = _event_row(context, event, event_number, f"{path}.metadata.receipt.events[{event_number}]")
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    # Chainhook does not sort receipt events by position; the log (and every client) sees them in order.
    rows.sort(key=lambda row: row.event_index)
    return rows, skipped


def _transaction_row(context: TxContext, row_type: str, tx: V1Transaction) -> EventRow:
    kind_data = dict(tx.metadata.kind.data or {})
    # Deployment source code can be hundreds of KB; the transaction hash leads to it.
    kind_data.pop("code", None)
    data = {"kind": tx.metadata.kind.type, **kind_data, "result": tx.metadata.result}
    return context.row(TRANSACTION_ROW_INDEX, context.contract_id, row_type, data,
                       addresses([context.sender]))


def _event_row(context: TxContext, event: V1Event, event_number: int, path: str) -> EventRow | None:
    known = V1_EVENT_TYPES.get(event.type)
    if known is None:
        return None
    event_type, model = known
    try:
        model.model_validate(event.data)
    except ValidationError as error:
        raise payload_error(error, f"{path}.data") from None
    # Before 2024 events had no block-wide position; their order within the transaction stands in.
    event_index = event.position.index if event.position else event_number
    data = _canonical_event_data(event_type, event.data)
    return context.row(event_index, _event_contract(event_type, data, context), event_type, data,
                       _event_addresses(data, context.sender))


def _canonical_event_data(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    if event_type == "print_event":
        return with_decoded_value(data)
    if event_type.startswith("nft_"):
        # Raw mode names the class in asset_identifier; decoded mode moves it to
        # asset_class_identifier and puts the token's value in asset_identifier.
        if "asset_class_identifier" not in data:
            data = {**data, "asset_class_identifier": data["asset_identifier"]}
        return with_decoded_value(data)
    return data


def _event_contract(event_type: str, data: dict[str, Any], context: TxContext) -> str:
    if event_type.startswith("stx_"):
        return context.contract_id
    if event_type.startswith("nft_"):
        return contract_of_asset(data["asset_class_identifier"])
    if event_type.startswith("ft_"):
        return contract_of_asset(data["asset_identifier"])
    contract = data.get("contract_identifier")
    return contract if isinstance(contract, str) else ""


def _event_addresses(data: dict[str, Any], sender: str) -> tuple[str, ...]:
    named = [data.get("sender"), data.get("recipient"), data.get("locked_address")]
    return addresses([a for a in named if isinstance(a, str)], principals_in(data.get("value")), [sender])
