"""Synthetic Chainhook payloads, v1 or 2.0, of any shape: one delivery per block.

    .venv/bin/python bench/synthetic.py --format 2.0 --blocks 3 --txs 4 --events 25 \\
        --addresses 1000 --contracts 20 > payloads.json

Each transaction is a contract call from one of ``addresses`` senders to one of ``contracts``
contracts and carries ``events`` events, cycling through a print (a Clarity tuple naming a
principal), a fungible-token transfer and an STX transfer. Everything is derived from the block
height and a seed, so the same arguments give the same payloads. Principals are real c32check ones,
so the service validates and indexes them as it would on chain.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import dataclass
from typing import Any

from _harness import ROOT, command_line

from timebank_realtime.chainhook.principals import decode_standard_principal, encode_standard_principal

sys.path.insert(0, str(ROOT))
from tests.v2_payloads import v2_from_v1  # the v1 -> 2.0 mapping the tests check

MAINNET_SINGLE_SIG = 22


@dataclass(frozen=True)
class Shape:
    txs: int = 1
    events: int = 100
    addresses: int = 1000
    contracts: int = 20
    seed: int = 7


def address(n: int) -> str:
    return encode_standard_principal(MAINNET_SINGLE_SIG, hashlib.sha256(f"bench-{n}".encode()).digest()[:20])


def contract(n: int) -> str:
    return f"{address(1_000_000 + n)}.bench-{n}"


def _clarity_string(text: str) -> str:
    return "0d" + len(text).to_bytes(4, "big").hex() + text.encode().hex()


def _clarity_principal(principal: str) -> str:
    # Standard principal: 0x05, version, hash160. The tuple's printed value names the address.
    version, hash160 = decode_standard_principal(principal)
    return "05" + bytes([version]).hex() + hash160.hex()


def _print_value(n: int, who: str) -> str:
    """(tuple (amount u<n>) (kind "deposit") (who <principal>)), serialized; keys in Clarity order."""
    fields = [("amount", "01" + n.to_bytes(16, "big").hex()), ("kind", _clarity_string("deposit")),
              ("who", _clarity_principal(who))]
    return "0x0c" + len(fields).to_bytes(4, "big").hex() + "".join(
        len(name).to_bytes(1, "big").hex() + name.encode().hex() + value for name, value in fields)


def _event(index: int, rng: random.Random, shape: Shape, target: str, sender: str) -> dict[str, Any]:
    other = address(rng.randrange(shape.addresses))
    amount = rng.randrange(1, 10**9)
    kind = index % 3
    if kind == 0:
        data: dict[str, Any] = {"contract_identifier": target, "topic": "print",
                                "raw_value": _print_value(amount, other)}
        return {"type": "SmartContractEvent", "position": {"index": index}, "data": data}
    if kind == 1:
        data = {"asset_identifier": f"{target}::token", "sender": sender, "recipient": other, "amount": str(amount)}
        return {"type": "FTTransferEvent", "position": {"index": index}, "data": data}
    data = {"sender": sender, "recipient": other, "amount": str(amount)}
    return {"type": "STXTransferEvent", "position": {"index": index}, "data": data}


def _block_hash(height: int) -> str:
    return "0x" + hashlib.sha256(f"block {height}".encode()).hexdigest()


def v1_block(height: int, shape: Shape) -> dict[str, Any]:
    rng = random.Random(shape.seed * 1_000_003 + height)
    transactions = []
    for position in range(shape.txs):
        sender = address(rng.randrange(shape.addresses))
        target = contract(rng.randrange(shape.contracts))
        events = [_event(i, rng, shape, target, sender) for i in range(shape.events)]
        transactions.append({
            "transaction_identifier": {"hash": "0x" + hashlib.sha256(f"{height}:{position}".encode()).hexdigest()},
            "operations": [],
            "metadata": {
                "success": True, "sender": sender, "result": "(ok true)", "fee": 3000, "nonce": position,
                "position": {"index": position}, "raw_tx": "0x",
                "kind": {"type": "ContractCall", "data": {"contract_identifier": target, "method": "deposit",
                                                           "args": []}},
                "receipt": {"events": events, "mutated_contracts_radius": [], "mutated_assets_radius": []},
            },
        })
    return {"block_identifier": {"index": height, "hash": _block_hash(height)},
            "parent_block_identifier": {"index": height - 1, "hash": _block_hash(height - 1)},
            "timestamp": 1_730_000_000 + height, "metadata": {}, "transactions": transactions}


def payload(height: int, shape: Shape, fmt: str = "v1") -> dict[str, Any]:
    """One delivery holding one block."""
    v1 = {"apply": [v1_block(height, shape)], "rollback": [],
          "chainhook": {"uuid": "bench", "predicate": {"scope": "block_height"}, "is_streaming_blocks": True}}
    return v1 if fmt == "v1" else v2_from_v1(v1, network="mainnet")


def payloads(first_height: int, blocks: int, shape: Shape, fmt: str = "v1") -> list[dict[str, Any]]:
    return [payload(first_height + n, shape, fmt) for n in range(blocks)]


def main() -> None:
    parser = command_line(__doc__)
    parser.add_argument("--format", choices=["v1", "2.0"], default="v1")
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--first-height", type=int, default=1_000_000)
    parser.add_argument("--txs", type=int, default=Shape.txs)
    parser.add_argument("--events", type=int, default=Shape.events, help="events per transaction")
    parser.add_argument("--addresses", type=int, default=Shape.addresses)
    parser.add_argument("--contracts", type=int, default=Shape.contracts)
    parser.add_argument("--seed", type=int, default=Shape.seed)
    args = parser.parse_args()
    shape = Shape(txs=args.txs, events=args.events, addresses=args.addresses, contracts=args.contracts, seed=args.seed)
    json.dump(payloads(args.first_height, args.blocks, shape, args.format), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
