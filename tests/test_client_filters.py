"""The Python client (clients/python/) routes a live change to its subscriptions by its own filter
matching, since it cannot import the server: on generated filters and changes, it must agree with the
server's (realtime.subscriptions: parse_filter, Filter.matches), which decides what the socket is sent."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from timebank_realtime.events import EVENT_TYPES
from timebank_realtime.realtime.subscriptions import parse_filter
from timebank_realtime_client import normalize_filter, parse_change

from .expected import BNS, FREDDIE, MINTER, MONSTERS, SUBNET, SUBNET_SENDER

CONTRACTS = [MONSTERS, SUBNET, FREDDIE, BNS]
ADDRESSES = [MINTER, SUBNET_SENDER, "ST221Z6TDTC5E0BYR2V624Q2ST6R0Q71T78WTAX6H", MONSTERS]
ASSETS = [f"{MONSTERS}::nft-monsters", f"{SUBNET}::token", f"{FREDDIE}::usda"]
TX_HASHES = [f"0x{n:064x}" for n in (1, 0xABC, 0xDEF0)]
NETWORKS = ["mainnet", "testnet", "regtest"]
# The values a change can carry, by filter field.
POOLS: dict[str, list[str]] = {"contract": CONTRACTS, "address": ADDRESSES, "asset": ASSETS, "tx_hash": TX_HASHES,
                               "network": NETWORKS, "event_type": list(EVENT_TYPES[:5])}


def spelled(name: str, value: str) -> st.SearchStrategy[str]:
    """A filter value as a client may write it: tx hashes in any case, networks in any case and padded."""
    if name == "tx_hash":
        return st.sampled_from([value, value.upper().replace("0X", "0x")])
    if name == "network":
        return st.sampled_from([value, value.upper(), f" {value.title()} "])
    return st.just(value)


@st.composite
def field_values(draw: st.DrawFn, name: str) -> str | list[str]:
    values = draw(st.lists(st.sampled_from(POOLS[name]), min_size=1, max_size=3, unique=True))
    written = [draw(spelled(name, value)) for value in values]
    return written[0] if len(written) == 1 and draw(st.booleans()) else written


@st.composite
def filters(draw: st.DrawFn) -> dict[str, Any]:
    form = draw(st.sampled_from(["fields", "blocks", "seed"]))
    if form == "blocks":
        raw: dict[str, Any] = {"topic": "blocks"}
        if draw(st.booleans()):
            raw["network"] = draw(field_values("network"))
        return raw
    if form == "seed":
        seed, key, name = draw(st.sampled_from([("contract", "contractId", "contract"), ("user", "address", "address"),
                                                ("event-type", "eventType", "event_type")]))
        return {"type": seed, key: draw(field_values(name))}
    names = draw(st.lists(st.sampled_from(sorted(POOLS)), max_size=3, unique=True))
    raw = {name: draw(field_values(name)) for name in names}
    if draw(st.booleans()):
        raw["topic"] = "events"
    return raw


def common(draw: st.DrawFn) -> dict[str, Any]:
    return {"id": draw(st.integers(1, 1000)), "cursor": draw(st.integers(1, 10**6)),
            "block_height": draw(st.integers(1, 10**6)), "block_hash": f"0x{draw(st.integers(0, 99)):064x}",
            "network": draw(st.sampled_from(NETWORKS))}


@st.composite
def changes(draw: st.DrawFn) -> dict[str, Any]:
    """A change as the server sends it (the body of its message)."""
    kind = draw(st.sampled_from(["event", "rollback", "block"]))
    body = common(draw)
    if kind == "block":
        return {**body, "topic": "block", "timestamp": "2024-11-02T12:36:43+00:00", "transactions": 1,
                "events": 2, "canonical": draw(st.booleans())}
    body |= {"tx_hash": draw(st.sampled_from(TX_HASHES)), "event_index": draw(st.integers(0, 9)),
             "contract_id": draw(st.sampled_from([*CONTRACTS, ""])), "event_type": draw(st.sampled_from(EVENT_TYPES)),
             "affected_addresses": draw(st.lists(st.sampled_from(ADDRESSES), max_size=3, unique=True)),
             "asset_identifier": draw(st.sampled_from([*ASSETS, None]))}
    if kind == "rollback":
        return {**body, "canonical": False}
    return {**body, "tx_index": 0, "event_data": {}, "success": True, "timestamp": "2024-11-02T12:36:43+00:00",
            "chainhook_uuid": "", "canonical": True}


@settings(max_examples=500, deadline=None)
@given(raw=filters(), change=changes())
def test_the_client_matches_what_the_server_sends(raw: dict[str, Any], change: dict[str, Any]) -> None:
    server = parse_filter(raw)
    client = normalize_filter(raw)
    assert client.matches(parse_change(change)) == server.matches(change)
    # The filter the ack carries (the server's normalized form) is read the same way.
    assert normalize_filter(server.describe()) == client


def test_the_generated_kinds_of_filters_both_match_and_miss() -> None:
    """The property above is not vacuous: such filters match some changes and miss others."""
    event = {"id": 1, "cursor": 7, "block_height": 5, "block_hash": f"0x{5:064x}", "network": "testnet",
             "tx_hash": TX_HASHES[0], "tx_index": 0, "event_index": 0, "contract_id": MONSTERS,
             "event_type": "print_event", "event_data": {}, "affected_addresses": [MINTER], "success": True,
             "timestamp": "2024-11-02T12:36:43+00:00", "chainhook_uuid": "", "asset_identifier": None,
             "canonical": True}
    for raw in ({"contract": MONSTERS}, {"type": "contract", "contractId": MONSTERS},
                {"type": "user", "address": MINTER}, {"tx_hash": TX_HASHES[0].upper().replace("0X", "0x")},
                {"network": " TestNet "}, {}):
        assert normalize_filter(raw).matches(parse_change(event)) is parse_filter(raw).matches(event) is True, raw
    for raw in ({"contract": SUBNET}, {"topic": "blocks"}, {"network": "mainnet"}, {"asset": ASSETS[0]}):
        assert normalize_filter(raw).matches(parse_change(event)) is parse_filter(raw).matches(event) is False, raw
