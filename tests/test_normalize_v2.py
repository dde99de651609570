"""Chainhooks 2.0 payloads map onto the same vocabulary as v1 (pure)."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest

from timebank_realtime.chainhook.models import V2Payload, parse_payload
from timebank_realtime.chainhook.normalize import normalize
from timebank_realtime.events import EventRow

from .conftest import load_fixture
from .v2_payloads import DIKO_TRANSFER, v2_from_v1

SAME_TRANSACTIONS = [
    "v1-stacks-print-event-arkadiko-mainnet-2023.json",
    "v1-stacks-contract-call-bns-testnet-2023.json",
    "v1-stacks-nakamoto-testnet-nft-mint-print-event.json",
    "v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json",
    "v1-stacks-regtest-stx-lock-event.json",
]


def comparable(row: EventRow) -> tuple[Any, ...]:
    data = row.event_data
    amount = data.get("amount", data.get("locked_amount"))
    return (row.tx_hash, row.event_type, row.contract_id, frozenset(row.affected_addresses), amount,
            row.success, repr(data.get("value")) if row.event_type == "print_event" else None)


@pytest.mark.parametrize("name", SAME_TRANSACTIONS)
def test_v2_describing_the_same_transactions_gives_the_same_events(name: str) -> None:
    v1 = load_fixture(name)
    v1_rows = normalize(parse_payload(v1)).events
    v2_delivery = normalize(parse_payload(v2_from_v1(v1)))
    assert v2_delivery.format == "v2"
    assert Counter(comparable(r) for r in v2_delivery.events) == Counter(comparable(r) for r in v1_rows)


def test_published_example_transfer_becomes_one_ft_transfer_with_both_sides() -> None:
    payload = parse_payload(copy.deepcopy(DIKO_TRANSFER))
    assert isinstance(payload, V2Payload)
    rows = normalize(payload).events
    assert [(r.event_type, r.event_index) for r in rows] == [
        ("contract_call", -1), ("ft_transfer_event", 2), ("print_event", 4)]
    call, transfer, log = rows
    assert call.contract_id == "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-token"
    assert call.event_data["method"] == "transfer"
    assert call.event_data["result"] == "(ok true)"
    assert transfer.contract_id == "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-token"
    assert transfer.event_data == {
        "asset_identifier": "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-token::diko",
        "amount": "10352515582",
        "sender": "SPV2YDN4RZ506655KZK493YKM31JQPKJ9NN3QCX9",
        "recipient": "SPBM1X391HWMCVHKH6GK8XJRDR6B7REZQYQ8KBCK",
    }
    assert set(transfer.affected_addresses) == {"SPV2YDN4RZ506655KZK493YKM31JQPKJ9NN3QCX9",
                                                "SPBM1X391HWMCVHKH6GK8XJRDR6B7REZQYQ8KBCK"}
    assert log.event_data["value"] is None and log.event_data["raw_value"] == "0x09"


def test_unpaired_transfer_operation_keeps_the_known_side() -> None:
    payload = copy.deepcopy(DIKO_TRANSFER)
    operations = payload["event"]["apply"][0]["transactions"][0]["operations"]
    del operations[3]  # the credit
    rows = normalize(parse_payload(payload)).events
    transfer = next(r for r in rows if r.event_type == "ft_transfer_event")
    assert transfer.event_data["sender"] == "SPV2YDN4RZ506655KZK493YKM31JQPKJ9NN3QCX9"
    assert transfer.event_data["recipient"] == ""


def test_failed_v2_transaction_keeps_only_its_transaction_row() -> None:
    payload = copy.deepcopy(DIKO_TRANSFER)
    payload["event"]["apply"][0]["transactions"][0]["metadata"]["status"] = "abort_by_post_condition"
    rows = normalize(parse_payload(payload)).events
    assert [(r.event_type, r.success) for r in rows] == [("contract_call", False)]


def test_v2_rollback_names_block_hashes() -> None:
    payload = copy.deepcopy(DIKO_TRANSFER)
    payload["event"]["rollback"] = payload["event"]["apply"]
    payload["event"]["apply"] = []
    delivery = normalize(parse_payload(payload))
    assert delivery.events == ()
    assert delivery.rollback_block_hashes == (
        "0xa204da7e0d8bb9a7c2f8a1f05e1ccdd1e1f15be0a4c2f5a6c0d9e7b3a1c2d3e4",)
