"""Follow timebank-realtime from the command line with the resuming Python client.

    .venv/bin/python examples/follow.py http://127.0.0.1:3000 '{"event_type": "print_event"}' --since 0

Prints every matching change once, in order, and keeps going across disconnects and server restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any

from timebank_realtime.client import TimebankClient


def show(kind: str, change: dict[str, Any]) -> None:
    what = change.get("event_type", "")
    print(f"{change['cursor']:>8} {kind:<8} {what:<22} {change.get('contract_id', '')} {change['tx_hash']}")


async def follow(url: str, subscription: dict[str, Any], since: int | str, token: str | None) -> None:
    async with TimebankClient(url, token=token) as client:
        await client.subscribe(subscription, show, since=since)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("filter", nargs="?", default="{}", help="subscription filter as JSON (default: everything)")
    parser.add_argument("--since", default="now", help="cursor to replay from, or now")
    parser.add_argument("--token", help="JWT, when the server sets SOCKET_AUTH_SECRET")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    since: int | str = args.since if args.since == "now" else int(args.since)
    asyncio.run(follow(args.url, json.loads(args.filter), since, args.token))


if __name__ == "__main__":
    main()
