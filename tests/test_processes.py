"""Whole processes: two servers on one database, a killed node, and the zero-config default."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg

from .conftest import Listener, StartService, eventually, load_fixture, post_webhook, settle
from .expected import MONSTERS
from .payloads import nft_block, synthetic_payload
from .processes import ServiceProcess, service_env

OpenListener = Callable[..., Awaitable[Listener]]


async def two_nodes(start_service: StartService, database_url: str) -> tuple[ServiceProcess, ServiceProcess]:
    node_a, node_b = await asyncio.gather(start_service(DATABASE_URL=database_url),
                                          start_service(DATABASE_URL=database_url))
    return node_a, node_b


async def test_two_processes_on_one_database_both_deliver(
        start_service: StartService, database_url: str, db: asyncpg.Connection, http: aiohttp.ClientSession,
        listener: OpenListener) -> None:
    node_a, node_b = await two_nodes(start_service, database_url)
    on_a = await listener(node_a.url)
    on_b = await listener(node_b.url)
    other_b = await listener(node_b.url)
    await on_a.subscribe({"event_type": "print_event"})
    await on_b.subscribe({"event_type": "print_event"})
    await other_b.subscribe({"event_type": "stx_lock_event"})

    status, _ = await post_webhook(http, node_a.url, load_fixture("v1-stacks-print-event-arkadiko-mainnet-2023.json"))
    assert status == 200
    status, _ = await post_webhook(http, node_b.url, load_fixture("v1-stacks-regtest-stx-lock-event.json"))
    assert status == 200

    prints = [r["cursor"] for r in await db.fetch(
        "SELECT c.\"cursor\" FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id "
        "WHERE e.event_type = 'print_event' ORDER BY 1")]
    assert len(prints) == 6
    await eventually(lambda: len(on_a.received) == 6 and len(on_b.received) == 6 and len(other_b.received) == 3)
    await settle()
    assert on_a.cursors == prints
    assert on_b.cursors == prints
    assert [m["event_type"] for m in other_b.events()] == ["stx_lock_event"] * 3


async def test_a_node_killed_right_after_commit_loses_nothing(
        start_service: StartService, database_url: str, db: asyncpg.Connection, http: aiohttp.ClientSession,
        listener: OpenListener) -> None:
    node_a, node_b = await two_nodes(start_service, database_url)
    survivor = await listener(node_b.url)
    await survivor.subscribe({})
    status, body = await post_webhook(http, node_a.url,
                                      load_fixture("v1-stacks-nakamoto-testnet-nft-mint-print-event.json"))
    assert (status, body["cursor"]) == (200, 6)  # five events, then their block
    node_a.kill()  # before or after its own push: it does not matter to anyone else
    await eventually(lambda: len(survivor.received) == 5)
    assert survivor.cursors == [1, 2, 3, 4, 5]


async def test_zero_config_default_starts_embedded_postgres(start_service: StartService, tmp_path: Path,
                                                            http: aiohttp.ClientSession,
                                                            listener: OpenListener) -> None:
    data_dir = tmp_path / "data"
    service = await start_service(TIMEBANK_DATA_DIR=str(data_dir))
    client = await listener(service.url)
    await client.subscribe({"type": "user", "address": "ST221Z6TDTC5E0BYR2V624Q2ST6R0Q71T78WTAX6H"})
    status, body = await post_webhook(
        http, service.url, load_fixture("v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json"))
    assert (status, body["applied"]) == (200, 2)
    await eventually(lambda: len(client.received) == 1)
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert "embedded PostgreSQL ready" in service.log()
    assert "CHAINHOOK_WEBHOOK_SECRET is not set" in service.log()
    await client.close()
    assert service.stop() == 0

    # A second start reuses the same data: the event is still there and is not stored again.
    again = await start_service(TIMEBANK_DATA_DIR=str(data_dir))
    status, body = await post_webhook(
        http, again.url, load_fixture("v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json"))
    assert (status, body["applied"], body["duplicates"]) == (200, 0, 2)


def test_migrate_command(database_url: str) -> None:
    result = subprocess.run([sys.executable, "-m", "timebank_realtime", "migrate"],
                            env=service_env(DATABASE_URL=database_url), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database is up to date"


def test_invalid_configuration_is_reported(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "timebank_realtime", "serve"],
                            env=service_env(PORT="not-a-port", TIMEBANK_DATA_DIR=str(tmp_path)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    # The variable, as the operator set it, and not its value.
    assert result.stderr.startswith("invalid configuration: PORT: ") and "not-a-port" not in result.stderr


async def test_sigterm_mid_delivery_stores_it_whole_or_not_and_the_retry_converges(
        start_service: StartService, database_url: str, db: asyncpg.Connection, http: aiohttp.ClientSession,
        listener: OpenListener) -> None:
    node = await start_service(DATABASE_URL=database_url, SHUTDOWN_GRACE_SECONDS="30")
    watcher = await listener(node.url)
    await watcher.subscribe({})
    big = synthetic_payload(7000, 20_000)
    block_hash = big["apply"][0]["block_identifier"]["hash"]
    rows = 20_001  # the print events and the contract call's own row
    delivery = asyncio.create_task(post_webhook(http, node.url, big))
    await asyncio.sleep(0.3)  # the delivery is being read, parsed or written
    node.process.send_signal(signal.SIGTERM)
    try:
        status, _ = await delivery
    except aiohttp.ClientError:
        status = None
    assert await asyncio.to_thread(node.process.wait, 60) == 0
    stored = await db.fetchval("SELECT count(*) FROM chainhook_events WHERE block_hash = $1", block_hash)
    assert stored in (0, rows)  # one transaction: never half
    if status == 200:
        assert stored == rows
    assert not watcher.client.connected  # sockets were sent off to reconnect elsewhere
    log = node.log()
    assert "shutting down" in log and "stopped" in log

    # Chainhook retries, here on another node: the delivery ends up stored exactly once.
    other = await start_service(DATABASE_URL=database_url)
    status, body = await post_webhook(http, other.url, big)
    assert status == 200 and body["applied"] + body["duplicates"] == rows
    assert await db.fetchval("SELECT count(*) FROM chainhook_events WHERE block_hash = $1", block_hash) == rows


async def test_clients_of_a_dead_node_resume_on_another_with_their_cursor(
        start_service: StartService, database_url: str, db: asyncpg.Connection, http: aiohttp.ClientSession,
        listener: OpenListener) -> None:
    node_a, node_b = await two_nodes(start_service, database_url)
    on_a = await listener(node_a.url)
    await on_a.subscribe({"contract": MONSTERS, "since": 0})
    for number in range(3):
        assert (await post_webhook(http, node_b.url, nft_block(number)))[0] == 200
    await eventually(lambda: len(on_a.received) == 12)
    node_a.kill()
    await eventually(lambda: not on_a.client.connected)
    last_seen = on_a.cursors[-1]
    for number in range(3, 6):  # deliveries go on while the client moves
        assert (await post_webhook(http, node_b.url, nft_block(number)))[0] == 200
    moved = await listener(node_b.url)
    await moved.subscribe({"contract": MONSTERS, "since": last_seen})
    for number in range(6, 8):
        assert (await post_webhook(http, node_b.url, nft_block(number)))[0] == 200
    expected = [r["cursor"] for r in await db.fetch(
        'SELECT c."cursor" FROM chainhook_changes c JOIN chainhook_events e ON e.id = c.event_id '
        "WHERE e.contract_id = $1 ORDER BY 1", MONSTERS)]
    await eventually(lambda: on_a.cursors + moved.cursors == expected)
