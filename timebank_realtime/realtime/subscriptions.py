"""Socket subscriptions: parsing and validating filters, and an index that finds who gets an event.

Pure, in-memory code. A filter is an AND of fields, each field a set of accepted values (an empty
set means "any"); a socket's subscriptions are OR-ed. Each subscription is indexed under the values
of its most selective field, so an event looks up only the few candidates that could match it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..chainhook.models import MAX_NETWORK_CHARS
from ..chainhook.principals import (
    InvalidPrincipal,
    validate_asset_identifier,
    validate_contract_id,
    validate_principal,
)
from ..errors import CodedError
from ..events import EVENT_TYPES
from ..events import FILTER_FIELDS as FIELDS

DEFAULT_MAX_VALUES = 100
MAX_CURSOR = 2**63 - 1
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")  # fullmatch: "$" would also take a trailing newline
# Forms sent by existing Time Bank clients: {"type": ..., <field>: value}.
_LEGACY_FORMS = {"contract": ("contractId", "contract"), "user": ("address", "address"),
                 "event-type": ("eventType", "event_type")}
_RESERVED_KEYS = {"since", "topic"}  # subscribe options, not filter fields
TOPICS = ("events", "blocks")
_BLOCK_FIELDS = {"network"}  # what a blocks subscription can filter on


class FilterError(CodedError):
    """A subscription filter (or history parameter value) that is not valid."""


@dataclass(frozen=True, slots=True)
class Filter:
    tx_hash: frozenset[str] = frozenset()
    asset: frozenset[str] = frozenset()
    contract: frozenset[str] = frozenset()
    address: frozenset[str] = frozenset()
    event_type: frozenset[str] = frozenset()
    network: frozenset[str] = frozenset()
    topic: str = "events"  # or "blocks": new canonical blocks and their rollbacks

    def values(self, name: str) -> frozenset[str]:
        values: frozenset[str] = getattr(self, name)
        return values

    def matches(self, event: Mapping[str, Any]) -> bool:
        """``event``: a change of the log, or the body of a message (block bodies say ``topic: block``)."""
        if (event.get("topic") == "block") != (self.topic == "blocks"):
            return False
        if self.tx_hash and event["tx_hash"] not in self.tx_hash:
            return False
        if self.contract and event["contract_id"] not in self.contract:
            return False
        if self.event_type and event["event_type"] not in self.event_type:
            return False
        if self.network and event["network"] not in self.network:
            return False
        if self.asset and event["asset_identifier"] not in self.asset:
            return False
        return not self.address or not self.address.isdisjoint(event["affected_addresses"])

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"topic": self.topic} if self.topic != "events" else {}
        return described | {name: sorted(self.values(name)) for name in FIELDS if self.values(name)}

    def as_match(self) -> dict[str, frozenset[str]]:
        """The topic and the named fields with their accepted values (what the store filters a replay by)."""
        return {"topic": frozenset({self.topic}), **{name: self.values(name) for name in FIELDS if self.values(name)}}


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    filter: Filter
    since: int | None  # None: live only ("now")


def _as_values(name: str, raw: Any, max_values: int) -> list[str]:
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise FilterError("invalid_filter", f"{name} needs at least one value")
    if len(values) > max_values:
        raise FilterError("too_many_values", f"{name} takes at most {max_values} values")
    if not all(isinstance(v, str) for v in values):
        raise FilterError("invalid_filter", f"{name} values must be strings")
    return values


def validate_value(name: str, value: str) -> str:
    """One filter value, checked and normalized (tx hashes and networks lower-cased); FilterError
    otherwise."""
    try:
        if name == "contract":
            return validate_contract_id(value)
        if name == "address":
            return validate_principal(value)
        if name == "asset":
            return validate_asset_identifier(value)
    except InvalidPrincipal as error:
        raise FilterError(f"invalid_{name}", str(error)) from None
    if name == "network":
        network = value.strip().lower()
        if not 0 < len(network) <= MAX_NETWORK_CHARS:
            raise FilterError("invalid_network", f"a network is a name of 1 to {MAX_NETWORK_CHARS} characters, "
                              "e.g. mainnet or testnet")
        return network
    if name == "event_type":
        if value not in EVENT_TYPES:
            raise FilterError("invalid_event_type",
                              f"{value!r} is not an event type; known types: {', '.join(EVENT_TYPES)}")
        return value
    normalized = value.lower()
    if not _TX_HASH.fullmatch(normalized):
        raise FilterError("invalid_tx_hash", f"{value!r} is not a 0x-prefixed 32-byte hex transaction hash")
    return normalized


def _fields_of(raw: Mapping[str, Any]) -> dict[str, Any]:
    if "type" not in raw:
        return {k: v for k, v in raw.items() if k not in _RESERVED_KEYS}
    form = _LEGACY_FORMS.get(raw["type"]) if isinstance(raw["type"], str) else None
    if form is None:
        raise FilterError("invalid_filter", f"unknown subscription type {raw['type']!r}; "
                          f"known: {', '.join(_LEGACY_FORMS)}")
    legacy_key, name = form
    if legacy_key not in raw:
        raise FilterError("invalid_filter", f"a {raw['type']!r} subscription needs {legacy_key!r}")
    return {name: raw[legacy_key]}


def _parse_since(raw: Any) -> int | None:
    if raw == "now":
        return None
    # bool is an int in Python; a cursor is not. Cursors are PostgreSQL bigints.
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_CURSOR:
        raise FilterError("invalid_since", f"since is a cursor (an integer from 0 to {MAX_CURSOR}) or \"now\"")
    return raw


def parse_filter(raw: Mapping[str, Any], max_values: int = DEFAULT_MAX_VALUES) -> Filter:
    fields = _fields_of(raw)
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise FilterError("invalid_filter", f"unknown filter field(s) {unknown}; known: {list(FIELDS)}")
    topic = _parse_topic(raw)
    if topic == "blocks" and set(fields) - _BLOCK_FIELDS:
        raise FilterError("invalid_filter", f"the blocks topic filters by {', '.join(sorted(_BLOCK_FIELDS))} only; "
                          f"got {sorted(set(fields) - _BLOCK_FIELDS)}")
    parsed = {name: frozenset(validate_value(name, v) for v in _as_values(name, raw_values, max_values))
              for name, raw_values in fields.items()}
    return Filter(**parsed, topic=topic)


def _parse_topic(raw: Mapping[str, Any]) -> str:
    topic = raw.get("topic", "events")
    if topic not in TOPICS:
        raise FilterError("invalid_topic", f"topic is one of {', '.join(TOPICS)}")
    return str(topic)


def parse_subscribe(raw: Any, max_values: int = DEFAULT_MAX_VALUES) -> SubscribeRequest:
    """Validate a client's subscribe payload, or raise FilterError with a machine-readable code."""
    if not isinstance(raw, Mapping):
        raise FilterError("invalid_filter", "subscribe takes an object, e.g. {\"contract\": \"SP….name\"}")
    return SubscribeRequest(parse_filter(raw, max_values), _parse_since(raw.get("since", "now")))


Key = tuple[str, str]  # (socket id, subscription id)


@dataclass(slots=True)
class SubscriptionRegistry:
    """Who holds which subscription, indexed by distinct filter.

    Many sockets usually share a filter (every dashboard on the firehose, every wallet page on its
    contract), so matching is done once per distinct filter and the result shared by its holders.
    Each distinct filter is indexed under the values of its most selective field."""

    _by_socket: dict[str, dict[str, Filter]] = field(default_factory=dict)
    _holders: dict[Filter, set[Key]] = field(default_factory=dict)
    _index: dict[tuple[str, str], set[Filter]] = field(default_factory=dict)
    _firehose: set[Filter] = field(default_factory=set)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, sid: str, subscription: Filter) -> str:
        sub_id = f"sub-{next(self._ids)}"
        self._by_socket.setdefault(sid, {})[sub_id] = subscription
        holders = self._holders.get(subscription)
        if holders is None:
            holders = self._holders[subscription] = set()
            index_keys = self._index_keys(subscription)
            for index_key in index_keys:
                self._index.setdefault(index_key, set()).add(subscription)
            if not index_keys:
                self._firehose.add(subscription)
        holders.add((sid, sub_id))
        return sub_id

    def remove(self, sid: str, sub_id: str) -> bool:
        subscription = self._by_socket.get(sid, {}).pop(sub_id, None)
        if subscription is None:
            return False
        holders = self._holders[subscription]
        holders.discard((sid, sub_id))
        if not holders:
            del self._holders[subscription]
            for index_key in self._index_keys(subscription):
                indexed = self._index[index_key]
                indexed.discard(subscription)
                if not indexed:
                    del self._index[index_key]
            self._firehose.discard(subscription)
        if not self._by_socket[sid]:
            del self._by_socket[sid]
        return True

    def drop_socket(self, sid: str) -> int:
        sub_ids = list(self._by_socket.get(sid, {}))
        for sub_id in sub_ids:
            self.remove(sid, sub_id)
        return len(sub_ids)

    def count_by_kind(self) -> dict[str, int]:
        """Subscriptions by the field they are indexed under ("firehose" for the empty filter)."""
        counts = dict.fromkeys((*FIELDS, "firehose"), 0)
        for subscription, holders in self._holders.items():
            index_keys = self._index_keys(subscription)
            counts[index_keys[0][0] if index_keys else "firehose"] += len(holders)
        return counts

    @property
    def subscription_count(self) -> int:
        return sum(len(holders) for holders in self._holders.values())

    def audiences(self, events: Sequence[Mapping[str, Any]]) -> list[tuple[list[int], set[Key]]]:
        """For each distinct filter matching any of ``events``: the positions it matches, ascending,
        and the (socket, subscription) pairs that hold it."""
        hits: dict[Filter, list[int]] = {}
        for position, event in enumerate(events):
            for candidates in self._candidate_sets(event):
                for subscription in candidates:
                    positions = hits.get(subscription)
                    if positions is None:
                        if subscription.matches(event):
                            hits[subscription] = [position]
                    elif positions[-1] != position and subscription.matches(event):
                        positions.append(position)
        return [(positions, self._holders[subscription]) for subscription, positions in hits.items()]

    def _candidate_sets(self, event: Mapping[str, Any]) -> Iterator[set[Filter]]:
        if self._firehose:
            yield self._firehose
        if event.get("topic") == "block":
            found = self._index.get(("network", event["network"]))
            if found:
                yield found
            return
        for lookup in (("tx_hash", event["tx_hash"]), ("asset", event["asset_identifier"]),
                       ("contract", event["contract_id"]), ("event_type", event["event_type"]),
                       ("network", event["network"])):
            found = self._index.get(lookup)
            if found:
                yield found
        for address in event["affected_addresses"]:
            found = self._index.get(("address", address))
            if found:
                yield found

    @staticmethod
    def _index_keys(subscription: Filter) -> list[tuple[str, str]]:
        for name in FIELDS:
            values = subscription.values(name)
            if values:
                return [(name, value) for value in values]
        return []
