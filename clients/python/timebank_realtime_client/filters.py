"""Subscription filters as the client needs them: normalized as the server normalizes them, and matched
against the changes a socket is pushed, to route an untagged (live) change to every subscription of the
socket that wants it (docs/protocol.md, "Filters" and "Client rules"). Pure.

The server validates filters (principal checksums, known event types) and refuses a bad one with a
code; the client does not repeat that. It only normalizes (the seed forms, one value or a list, tx
hashes and networks in lower case) so that its matching agrees with the server's, which the server's
suite checks on generated filters and changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .models import Change

FIELDS = ("tx_hash", "asset", "contract", "address", "event_type", "network")
TOPICS = ("events", "blocks")
# The forms existing Time Bank clients send: {"type": ..., <key>: value} names one field.
SEED_FORMS = {"contract": ("contractId", "contract"), "user": ("address", "address"),
              "event-type": ("eventType", "event_type")}
_OPTIONS = ("since", "topic")  # subscribe options beside the filter fields


class FilterShapeError(ValueError):
    """A filter the client cannot read; the server says precisely why when it is sent."""


@dataclass(frozen=True, slots=True)
class Filter:
    """The fields a subscription names, each with the values it accepts (AND of fields, OR of values)."""

    topic: str = "events"
    fields: dict[str, frozenset[str]] = field(default_factory=dict)

    def matches(self, change: Change) -> bool:
        if (change.kind in ("block", "block_rollback")) != (self.topic == "blocks"):
            return False
        for name, accepted in self.fields.items():
            if name == "address":
                if accepted.isdisjoint(getattr(change, "affected_addresses", ())):
                    return False
            elif getattr(change, _CHANGE_FIELD.get(name, name), None) not in accepted:
                return False
        return True


# Filter field -> the change's field it is compared with.
_CHANGE_FIELD = {"contract": "contract_id", "asset": "asset_identifier"}
# Never matches: what a filter the client cannot read routes until the server's ack says what it is.
NOTHING = Filter(topic="none")


def normalize_filter(raw: Mapping[str, Any]) -> Filter:
    """The filter a subscribe payload names, as the server reads it; FilterShapeError if it cannot be
    read (unknown field or form, a value that is not a string)."""
    topic = raw.get("topic", "events")
    if topic not in TOPICS:
        raise FilterShapeError(f"topic is one of {', '.join(TOPICS)}")
    named = _named_fields(raw)
    unknown = sorted(set(named) - set(FIELDS))
    if unknown:
        raise FilterShapeError(f"unknown filter field(s) {unknown}")
    return Filter(topic=str(topic), fields={name: _values(name, value) for name, value in named.items()})


def _named_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    if "type" not in raw:
        return {key: value for key, value in raw.items() if key not in _OPTIONS}
    form = SEED_FORMS.get(raw["type"]) if isinstance(raw["type"], str) else None
    if form is None or form[0] not in raw:
        raise FilterShapeError(f"unknown subscription form {raw['type']!r}")
    key, name = form
    return {name: raw[key]}


def _values(name: str, raw: Any) -> frozenset[str]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(value, str) for value in values):
        raise FilterShapeError(f"{name} takes a string or a non-empty list of strings")
    # The server compares these in lower case (networks trimmed too); the others exactly.
    if name == "network":
        return frozenset(value.strip().lower() for value in values)
    if name == "tx_hash":
        return frozenset(value.lower() for value in values)
    return frozenset(values)
