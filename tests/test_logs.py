"""The service's logs, read from a real server process: LOG_FORMAT=json and the text line."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from .conftest import eventually, load_fixture, post_webhook
from .processes import ServiceProcess

NFT = "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"
UTC_MILLISECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# Five hours east of UTC: a time written in local time but labelled UTC would be five hours out.
EAST_OF_UTC = "XYZ-5"


async def served_delivery_log(tmp_path: Path, database_url: str, http: aiohttp.ClientSession,
                              **settings: str) -> str:
    """The whole log of a server that took the NFT fixture once, into an empty database (the callers
    take the ``db`` fixture), and was stopped."""
    service = ServiceProcess(tmp_path / "service.log", DATABASE_URL=database_url, TZ=EAST_OF_UTC, **settings)
    try:
        await service.wait_ready()
        status, _ = await post_webhook(http, service.url, load_fixture(NFT))
        assert status == 200
        await eventually(lambda: "delivery" in service.log())
    finally:
        assert service.stop() == 0
    return service.log()


async def test_json_logs_are_one_object_a_line_with_utc_times_and_the_delivery_s_fields(
        tmp_path: Path, database_url: str, db: asyncpg.Connection, http: aiohttp.ClientSession) -> None:
    before = datetime.now(UTC)
    log = await served_delivery_log(tmp_path, database_url, http, LOG_FORMAT="json")
    after = datetime.now(UTC)
    entries: list[dict[str, Any]] = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert len(entries) >= 3  # listening, the delivery, the drain
    for entry in entries:
        assert list(entry)[:4] == ["time", "level", "logger", "message"], entry
        assert UTC_MILLISECONDS.match(entry["time"]), entry
        # The second is truncated to milliseconds: allow for it, and nothing like an hour.
        assert before - timedelta(seconds=1) <= datetime.fromisoformat(entry["time"]) <= after, entry
        assert entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR")
        assert isinstance(entry["logger"], str) and isinstance(entry["message"], str)

    [delivery] = [e for e in entries if e["message"] == "delivery"]
    assert (delivery["level"], delivery["logger"]) == ("INFO", "timebank_realtime.http.webhook")
    payload = load_fixture(NFT)
    assert delivery["format"] == "v1"
    assert delivery["chainhook_uuid"] == payload["chainhook"]["uuid"]
    assert delivery["network"] == "testnet"
    assert delivery["tip_height"] == payload["apply"][0]["block_identifier"]["index"]
    counts = {key: delivery[key] for key in ("apply_blocks", "rollback_blocks", "rows", "applied", "duplicates",
                                             "rolled_back", "restored", "block_changes", "skipped_events", "cursor")}
    assert counts == {"apply_blocks": 1, "rollback_blocks": 0, "rows": 5, "applied": 5, "duplicates": 0,
                      "rolled_back": 0, "restored": 0, "block_changes": 1, "skipped_events": 0, "cursor": 6}
    assert all(type(value) is int for value in counts.values())
    assert delivery["streamed"] is False
    assert type(delivery["duration_ms"]) is float and delivery["duration_ms"] >= 0


async def test_the_text_log_line_shows_the_delivery_s_fields(tmp_path: Path, database_url: str,
                                                             db: asyncpg.Connection,
                                                             http: aiohttp.ClientSession) -> None:
    log = await served_delivery_log(tmp_path, database_url, http)
    [line] = [line for line in log.splitlines() if " delivery " in line]
    uuid = load_fixture(NFT)["chainhook"]["uuid"]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO timebank_realtime\.http\.webhook delivery "
        rf"format=v1 chainhook_uuid={uuid} network=testnet apply_blocks=1 rollback_blocks=0 tip_height=\d+ rows=5 "
        r"applied=5 duplicates=0 rolled_back=0 restored=0 block_changes=1 skipped_events=0 cursor=6 streamed=False "
        r"duration_ms=\d+\.\d", line)
    assert not log.lstrip().startswith("{")
