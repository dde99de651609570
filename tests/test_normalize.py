"""Normalization of the shared v1 fixtures, pure: no database, no server."""

from __future__ import annotations

from typing import Any

import pytest

from timebank_realtime.chainhook.models import parse_payload
from timebank_realtime.chainhook.normalize import normalize
from timebank_realtime.chainhook.rows import TRANSACTION_ROW_INDEX
from timebank_realtime.errors import PayloadError

from .conftest import load_fixture
from .expected import EXPECTED_ROWS, EXPECTED_VALUES, SUBNET, SUBNET_SENDER, row_tuple


def unique_rows(name: str) -> list[Any]:
    seen: dict[tuple[str, str, int], Any] = {}
    for row in normalize(parse_payload(load_fixture(name))).events:
        seen.setdefault(row.natural_key, row)
    return list(seen.values())


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_fixture_produces_exactly_the_expected_rows(name: str) -> None:
    assert [row_tuple(r) for r in unique_rows(name)] == EXPECTED_ROWS[name]


@pytest.mark.parametrize(("name", "position"), sorted(EXPECTED_VALUES))
def test_print_values_are_decoded(name: str, position: int) -> None:
    assert unique_rows(name)[position].event_data["value"] == EXPECTED_VALUES[(name, position)]


def test_decoded_mode_fixture_maps_every_event_type() -> None:
    delivery = normalize(parse_payload(load_fixture("v1-stacks-decoded-all-asset-event-types-with-rollback.json")))
    events = [r for r in delivery.events if r.event_index != TRANSACTION_ROW_INDEX]
    assert [r.event_type for r in events] == [
        "stx_transfer_event", "stx_mint_event", "stx_lock_event", "stx_burn_event",
        "nft_transfer_event", "nft_mint_event", "nft_burn_event",
        "ft_transfer_event", "ft_mint_event", "ft_burn_event",
        "print_event", "print_event", "print_event",
    ]
    assert delivery.rollback_block_hashes == ("0x",)
    # STX events belong to the called contract; asset events to the asset's contract.
    assert {r.contract_id for r in events[:4]} == {SUBNET}
    assert {r.contract_id for r in events[4:10]} == {"asset-id"}
    assert events[10].contract_id == "ST3AXH4EBHD63FCFPTZ8GR29TNTVWDYPGY0KDY5E5.loan-data"
    # Decoded mode: Chainhook's own value is kept; the NFT class is under asset_class_identifier.
    assert events[10].event_data["value"] == "abcsome-valueabc"
    assert events[4].event_data["asset_class_identifier"] == "asset-id"
    # Empty placeholder addresses are not addresses.
    assert all(r.affected_addresses == (SUBNET_SENDER,) for r in events)


def test_events_are_ordered_by_block_wide_position_not_arrival() -> None:
    delivery = normalize(parse_payload(load_fixture("v1-stacks-nakamoto-testnet-nft-mint-print-event.json")))
    assert [r.event_index for r in delivery.events] == [-1, 0, 1, 2, 3]


def test_block_element_wrapped_as_a_payload() -> None:
    block = load_fixture("v1-stacks-testnet-block-107605-apply-element.json")
    delivery = normalize(parse_payload({"apply": [block], "rollback": [], "chainhook": {"uuid": "u"}}))
    types = [r.event_type for r in delivery.events]
    assert "ft_transfer_event" in types and "print_event" in types
    assert all(r.block_height == 107605 for r in delivery.events)
    ft = next(r for r in delivery.events if r.event_type == "ft_transfer_event")
    assert ft.contract_id == ft.event_data["asset_identifier"].split("::")[0]
    assert ft.event_data["sender"] in ft.affected_addresses
    assert ft.event_data["recipient"] in ft.affected_addresses


def test_undecodable_print_value_keeps_the_event() -> None:
    payload = load_fixture("v1-stacks-print-event-arkadiko-mainnet-2023.json")
    payload["apply"][0]["transactions"][0]["metadata"]["receipt"]["events"][1]["data"]["raw_value"] = "0xff"
    row = normalize(parse_payload(payload)).events[2]
    assert row.event_type == "print_event"
    assert row.event_data["value"] is None
    assert "unknown type prefix" in row.event_data["decode_error"]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda p: p.pop("chainhook"), "$.chainhook"),
        (lambda p: p["apply"][0].pop("block_identifier"), "$.apply[0].block_identifier"),
        (lambda p: p["apply"][0]["block_identifier"].update(index="x"), "$.apply[0].block_identifier.index"),
        (lambda p: p["apply"][0]["transactions"][0]["metadata"]["receipt"]["events"][0]["data"].pop("amount"),
         "$.apply[0].transactions[0].metadata.receipt.events[0].data.amount"),
        (lambda p: p["apply"][0]["transactions"][0]["metadata"].update(success="maybe"),
         "$.apply[0].transactions[0].metadata.success"),
    ],
)
def test_invalid_payloads_name_the_first_problem(mutate: Any, path: str) -> None:
    payload = load_fixture("v1-stacks-print-event-arkadiko-mainnet-2023.json")
    mutate(payload)
    with pytest.raises(PayloadError) as raised:
        normalize(parse_payload(payload))
    assert raised.value.path == path


@pytest.mark.parametrize("body", [[], "x", {"hello": 1}, {"event": {"chain": "bitcoin"}}])
def test_non_payloads_are_refused(body: Any) -> None:
    with pytest.raises(PayloadError):
        parse_payload(body)
