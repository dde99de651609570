"""The subscription index (pure): matching without scanning every subscription."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timebank_realtime.chainhook.principals import encode_standard_principal
from timebank_realtime.realtime.subscriptions import FilterError, SubscriptionRegistry, parse_filter

from .expected import MONSTERS


def holders_of(registry: SubscriptionRegistry, event: Mapping[str, Any]) -> dict[str, list[str]]:
    """For each socket with a subscription matching ``event``, the ids of its matching subscriptions."""
    found: dict[str, list[str]] = {}
    for _positions, holders in registry.audiences([event]):
        for sid, sub_id in sorted(holders):
            found.setdefault(sid, []).append(sub_id)
    return found


def address(n: int) -> str:
    return encode_standard_principal(22, n.to_bytes(20, "big"))


def event(**fields: Any) -> dict[str, Any]:
    base = {"tx_hash": "0x" + "00" * 32, "contract_id": "", "event_type": "print_event", "affected_addresses": [],
            "network": "mainnet", "asset_identifier": None}
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
    assert holders_of(registry, hit) == {"socket-42": ["sub-43"], "socket-4242": ["sub-4243"], "firehose": ["sub-5002"]}


def test_compound_filters_need_every_field_and_any_value() -> None:
    registry = SubscriptionRegistry()
    sub_id = registry.add("s", parse_filter({"contract": MONSTERS, "event_type": ["nft_mint_event", "print_event"],
                                             "address": [address(1), address(2)]}))
    assert holders_of(registry, event(contract_id=MONSTERS, event_type="print_event",
                                  affected_addresses=[address(2)])) == {"s": [sub_id]}
    assert holders_of(registry, event(contract_id=MONSTERS, event_type="stx_transfer_event",
                                  affected_addresses=[address(2)])) == {}
    assert holders_of(registry, event(contract_id=MONSTERS, event_type="print_event",
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


CONTRACTS = [f"{address(900)}.c{n}" for n in range(3)]
ADDRESSES = [address(n) for n in range(4)]
TYPES = ["print_event", "ft_transfer_event", "contract_call"]
TXS = ["0x" + f"{n:064x}" for n in range(3)]
ASSETS = [f"{CONTRACTS[0]}::token", f"{CONTRACTS[1]}::nft"]
NETWORKS = ["mainnet", "testnet"]

filters = st.fixed_dictionaries({}, optional={
    "contract": st.lists(st.sampled_from(CONTRACTS), min_size=1, max_size=2),
    "address": st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=3),
    "event_type": st.lists(st.sampled_from(TYPES), min_size=1, max_size=2),
    "tx_hash": st.sampled_from(TXS),
    "asset": st.lists(st.sampled_from(ASSETS), min_size=1, max_size=2),
    "network": st.sampled_from(NETWORKS),
})
events = st.builds(event, tx_hash=st.sampled_from(TXS), contract_id=st.sampled_from(CONTRACTS),
                   event_type=st.sampled_from(TYPES),
                   affected_addresses=st.lists(st.sampled_from(ADDRESSES), max_size=3),
                   network=st.sampled_from(NETWORKS), asset_identifier=st.sampled_from([None, *ASSETS]))


@settings(max_examples=300, deadline=None)
@given(held=st.lists(st.tuples(st.integers(0, 5), filters), max_size=12), run=st.lists(events, max_size=8),
       dropped=st.lists(st.integers(0, 11), max_size=4))
def test_audiences_are_what_checking_every_subscription_gives(
        held: list[tuple[int, dict[str, Any]]], run: list[dict[str, Any]], dropped: list[int]) -> None:
    registry = SubscriptionRegistry()
    added = [(f"socket-{socket}", registry.add(f"socket-{socket}", parse_filter(raw)), parse_filter(raw))
             for socket, raw in held]
    for n in dropped:
        if n < len(added):
            registry.remove(added[n][0], added[n][1])
    expected = {}
    remaining = {(sid, sub_id) for sid, subs in registry._by_socket.items() for sub_id in subs}
    for sid, sub_id in remaining:
        f = registry._by_socket[sid][sub_id]
        positions = [i for i, e in enumerate(run) if f.matches(e)]
        if positions:
            expected[(sid, sub_id)] = positions
    got = {}
    for positions, holders in registry.audiences(run):
        assert positions == sorted(set(positions))
        for key in holders:
            assert key not in got
            got[key] = positions
    assert got == expected


def test_sockets_sharing_a_filter_share_one_audience() -> None:
    registry = SubscriptionRegistry()
    for n in range(1000):
        registry.add(f"socket-{n}", parse_filter({"contract": MONSTERS}))
    registry.add("other", parse_filter({"address": address(7)}))
    run = [event(contract_id=MONSTERS), event(affected_addresses=[address(7)]), event(contract_id=MONSTERS)]
    audiences = sorted(registry.audiences(run), key=lambda a: len(a[1]))
    assert [(positions, len(holders)) for positions, holders in audiences] == [([1], 1), ([0, 2], 1000)]
    assert registry.count_by_kind()["contract"] == 1000


def test_a_value_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(FilterError) as refused:
        parse_filter({"tx_hash": "0x" + "ab" * 32 + "\n"})
    assert refused.value.code == "invalid_tx_hash"


def test_a_contract_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(FilterError) as refused:
        parse_filter({"contract": MONSTERS + "\n"})
    assert refused.value.code == "invalid_contract"
