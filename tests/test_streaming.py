"""The streamed path (pure): the same rows as parsing whole, or a clear refusal to stream."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from timebank_realtime.chainhook.models import parse_payload
from timebank_realtime.chainhook.normalize import normalize
from timebank_realtime.chainhook.streaming import NeedsWholeParse, stream_rows
from timebank_realtime.errors import PayloadError
from timebank_realtime.events import DeliveryHeader

from .conftest import FIXTURES, load_fixture
from .payloads import synthetic_block, synthetic_payload
from .v2_payloads import DIKO_TRANSFER, v2_from_v1

# Whole payloads without rollbacks (one fixture is a bare block, not a payload).
STREAMABLE = [p.name for p in sorted(FIXTURES.glob("*.json"))
              if "apply" in load_fixture(p.name) and not load_fixture(p.name).get("rollback")]


def whole(document: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    delivery = normalize(parse_payload(document))
    keys = set()
    rows = []
    for row in delivery.events:  # the store keeps the first of each natural key
        if row.natural_key not in keys:
            keys.add(row.natural_key)
            rows.append(row)
    return rows, {"format": delivery.format, "chainhook_uuid": delivery.chainhook_uuid,
                  "apply_blocks": delivery.apply_blocks, "skipped_events": delivery.skipped_events,
                  "tip_height": delivery.tip_height, "rows": len(rows),
                  "repeats": len(delivery.events) - len(rows)}


def streamed(document: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    summary = DeliveryHeader()
    rows = list(stream_rows(json.dumps(document).encode(), summary))
    return rows, {"format": summary.format, "chainhook_uuid": summary.chainhook_uuid,
                  "apply_blocks": summary.apply_blocks, "skipped_events": summary.skipped_events,
                  "tip_height": summary.tip_height, "rows": summary.rows, "repeats": summary.repeats}


def two_block_payload() -> dict[str, Any]:
    payload = synthetic_payload(1000, 30)
    payload["apply"].append(synthetic_block(1001, 7))
    return payload


@pytest.mark.parametrize("name", STREAMABLE)
def test_fixtures_stream_into_the_same_rows(name: str) -> None:
    assert streamed(load_fixture(name)) == whole(load_fixture(name))


@pytest.mark.parametrize("document", [two_block_payload(), v2_from_v1(two_block_payload()), DIKO_TRANSFER],
                         ids=["v1", "2.0", "2.0-transfer"])
def test_synthetic_and_v2_payloads_stream_into_the_same_rows(document: dict[str, Any]) -> None:
    rows, summary = streamed(document)
    assert rows and (rows, summary) == whole(document)


def test_repeated_rows_in_one_payload_are_counted_once() -> None:
    payload = synthetic_payload(1000, 5)
    payload["apply"].append(copy.deepcopy(payload["apply"][0]))
    rows, summary = streamed(payload)
    assert (len(rows), summary["repeats"]) == (6, 6)
    assert (rows, summary) == whole(payload)


def test_an_invalid_transaction_is_named_as_the_whole_parse_names_it() -> None:
    payload = two_block_payload()
    del payload["apply"][1]["transactions"][0]["metadata"]["sender"]
    with pytest.raises(PayloadError) as whole_error:
        parse_payload(payload)
    with pytest.raises(PayloadError) as streamed_error:
        streamed(payload)
    assert streamed_error.value.path == whole_error.value.path == "$.apply[1].transactions[0].metadata.sender"


def test_an_invalid_header_is_refused_with_its_path() -> None:
    payload = two_block_payload()
    payload["chainhook"] = {"predicate": {}}
    with pytest.raises(PayloadError) as error:
        streamed(payload)
    assert error.value.path == "$.chainhook.uuid"


@pytest.mark.parametrize("change", ["rollback", "header_last", "big_integer", "not_json"])
def test_what_cannot_stream_says_so(change: str) -> None:
    payload = two_block_payload()
    body: bytes
    if change == "rollback":
        payload["rollback"] = [synthetic_block(999, 1)]
    elif change == "header_last":
        block = payload["apply"][0]
        payload["apply"][0] = {"transactions": block.pop("transactions"), **block}
    elif change == "big_integer":
        payload["apply"][0]["transactions"][0]["metadata"]["fee"] = 2**70
    body = json.dumps(payload).encode()
    if change == "not_json":
        body = body[:-10]
    with pytest.raises(NeedsWholeParse):
        list(stream_rows(body, DeliveryHeader()))
