"""The subscription index (pure): matching without scanning every subscription."""

from __future__ import annotations

from typing import Any

from timebank_realtime.principals import encode_standard_principal
from timebank_realtime.subscriptions import SubscriptionRegistry, parse_filter

from .expected import MONSTERS


def address(n: int) -> str:
    return encode_standard_principal(22, n.to_bytes(20, "big"))


def event(**fields: Any) -> dict[str, Any]:
    base = {"tx_hash": "0x" + "00" * 32, "contract_id": "", "event_type": "print_event", "affected_addresses": []}
    return {**base, **fields}


def test_thousands_of_subscriptions_are_looked_up_not_scanned() -> None:
    registry = SubscriptionRegistry()
    for n in range(5000):
        registry.add(f"socket-{n}", parse_filter({"address": address(n)}))
    registry.add("contract-watcher", parse_filter({"contract": MONSTERS, "event_type": "nft_mint_event"}))
    registry.add("firehose", parse_filter({}))

    hit = event(affected_addresses=[address(42), address(4242)], contract_id=MONSTERS, event_type="print_event")
    candidates = sum(len(found) for found in registry._candidate_sets(hit))
    assert candidates == 4  # two address holders, the contract watcher, the firehose; not 5002
    assert registry.matches(hit) == {"socket-42": ["sub-43"], "socket-4242": ["sub-4243"], "firehose": ["sub-5002"]}


def test_compound_filters_need_every_field_and_any_value() -> None:
    registry = SubscriptionRegistry()
    sub_id = registry.add("s", parse_filter({"contract": MONSTERS, "event_type": ["nft_mint_event", "print_event"],
                                             "address": [address(1), address(2)]}))
    assert registry.matches(event(contract_id=MONSTERS, event_type="print_event",
                                  affected_addresses=[address(2)])) == {"s": [sub_id]}
    assert registry.matches(event(contract_id=MONSTERS, event_type="stx_transfer_event",
                                  affected_addresses=[address(2)])) == {}
    assert registry.matches(event(contract_id=MONSTERS, event_type="print_event",
                                  affected_addresses=[address(3)])) == {}


def test_removing_subscriptions_empties_the_index() -> None:
    registry = SubscriptionRegistry()
    first = registry.add("s", parse_filter({"address": address(1)}))
    registry.add("s", parse_filter({"address": address(1), "event_type": "print_event"}))
    registry.add("t", parse_filter({}))
    assert registry.remove("s", first)
    assert not registry.remove("s", first)
    assert registry.drop_socket("s") == 1
    assert registry.drop_socket("t") == 1
    assert registry._index == {} and registry._firehose == set() and registry.subscription_count == 0
