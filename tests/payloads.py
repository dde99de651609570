"""Synthetic Chainhook v1 payloads of any size, shaped like the real fixtures."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from .expected import MONSTERS

_NFT_FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "chainhook" / \
    "v1-stacks-nakamoto-testnet-nft-mint-print-event.json"

SENDER = "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2"
RECIPIENT = "ST221Z6TDTC5E0BYR2V624Q2ST6R0Q71T78WTAX6H"


def _uint(n: int) -> str:
    return "0x01" + n.to_bytes(16, "big").hex()


def synthetic_block(height: int, events: int, *, padding: int = 0, contract: str = MONSTERS) -> dict[str, Any]:
    """One block with one contract call carrying ``events`` print events (plus ``padding`` bytes each)."""
    receipt = []
    for index in range(events):
        data: dict[str, Any] = {"contract_identifier": contract, "topic": "print", "raw_value": _uint(index)}
        if padding:
            data["note"] = "x" * padding
        receipt.append({"type": "SmartContractEvent", "position": {"index": index}, "data": data})
    return {
        "block_identifier": {"index": height, "hash": f"0x{height:064x}"},
        "parent_block_identifier": {"index": height - 1, "hash": f"0x{height - 1:064x}"},
        "timestamp": 1_730_000_000 + height,
        "metadata": {},
        "transactions": [{
            "transaction_identifier": {"hash": f"0x{height:062x}aa"},
            "operations": [],
            "metadata": {
                "success": True, "sender": SENDER, "result": "(ok true)", "fee": 1000, "nonce": 1,
                "position": {"index": 0}, "raw_tx": "0x",
                "kind": {"type": "ContractCall", "data": {"contract_identifier": contract, "method": "emit",
                                                           "args": []}},
                "receipt": {"events": receipt, "mutated_contracts_radius": [], "mutated_assets_radius": []},
            },
        }],
    }


def synthetic_payload(height: int, events: int, **options: Any) -> dict[str, Any]:
    return {"apply": [synthetic_block(height, events, **options)], "rollback": [],
            "chainhook": {"uuid": "synthetic", "predicate": {"scope": "block_height"}, "is_streaming_blocks": True}}


def nft_block(number: int) -> dict[str, Any]:
    """The real NFT-mint fixture moved to a block of its own: 5 new rows (4 of the monsters contract)."""
    payload: dict[str, Any] = copy.deepcopy(json.loads(_NFT_FIXTURE.read_text()))
    payload["apply"][0]["block_identifier"] = {"index": 300_000 + number, "hash": f"0x{number:064x}"}
    return payload
