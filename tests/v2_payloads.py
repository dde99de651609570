"""Chainhooks 2.0 payloads built to describe the same transactions as v1 fixtures.

The 2.0 shape follows the hosted service's published schema (@hirosystems/chainhooks-client):
``{event: {chain, network, apply, rollback}, chainhook: {uuid, name}}``, transactions with
``metadata.status``/``sender_address``/``position`` and Rosetta-style ``operations``.
"""

from __future__ import annotations

from typing import Any

_V1_KIND = {"ContractCall": "contract_call", "ContractDeployment": "contract_deploy",
            "NativeTokenTransfer": "token_transfer", "Coinbase": "coinbase"}


class _Ops:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, op_type: str, **fields: Any) -> None:
        self.items.append({"type": op_type, "status": "success",
                           "operation_identifier": {"index": len(self.items)}, **fields})


def _currency(event: dict[str, Any]) -> dict[str, Any]:
    data = event["data"]
    if event["type"].startswith("STX"):
        return {"symbol": "STX", "decimals": 6}
    if event["type"].startswith("FT"):
        return {"symbol": "", "decimals": 0, "metadata": {"token_type": "ft",
                                                        "asset_identifier": data["asset_identifier"]}}
    return {"symbol": "", "decimals": 0, "metadata": {"token_type": "nft", "asset_identifier": data["asset_identifier"],
                                                    "value": data["raw_value"]}}


def _amount(event: dict[str, Any], sign: int) -> dict[str, Any]:
    value = int(event["data"].get("amount", "1"))
    return {"value": str(sign * value), "currency": _currency(event)}


def _event_operations(ops: _Ops, event: dict[str, Any]) -> None:
    kind, data = event["type"], event["data"]
    if kind.endswith("TransferEvent") and kind != "SmartContractEvent":
        ops.add("token_transfer", account={"address": data["sender"]}, amount=_amount(event, -1))
        ops.add("token_transfer", account={"address": data["recipient"]}, amount=_amount(event, 1))
    elif kind.endswith("MintEvent"):
        ops.add("token_mint", account={"address": data["recipient"]}, amount=_amount(event, 1))
    elif kind.endswith("BurnEvent"):
        ops.add("token_burn", account={"address": data["sender"]}, amount=_amount(event, -1))
    elif kind == "STXLockEvent":
        ops.add("stx_lock", account={"address": data["locked_address"]},
                amount={"value": data["locked_amount"], "currency": {"symbol": "STX", "decimals": 6}},
                metadata={"unlock_height": int(data["unlock_height"]), "locked_address": data["locked_address"],
                          "contract_name": "pox-4"})
    elif kind == "SmartContractEvent":
        ops.add("contract_log", metadata={"contract_identifier": data["contract_identifier"],
                                          "topic": data["topic"],
                                          "value": {"hex": data["raw_value"], "repr": "(…)"}})


def _transaction(tx: dict[str, Any]) -> dict[str, Any]:
    meta = tx["metadata"]
    ops = _Ops()
    ops.add("fee", account={"address": meta["sender"]},
            amount={"value": f"-{meta['fee']}", "currency": {"symbol": "STX", "decimals": 6}},
            metadata={"sponsored": False})
    kind = _V1_KIND.get(meta["kind"]["type"], "coinbase")
    if kind == "contract_call":
        ops.add("contract_call", account={"address": meta["sender"]},
                metadata={"contract_identifier": meta["kind"]["data"]["contract_identifier"],
                          "function_name": meta["kind"]["data"]["method"], "args": None})
    events = sorted(meta["receipt"]["events"], key=lambda e: e.get("position", {}).get("index", 0))
    for event in events:
        _event_operations(ops, event)
    return {
        "transaction_identifier": tx["transaction_identifier"],
        "operations": ops.items,
        "metadata": {
            "type": kind,
            "status": "success" if meta["success"] else "abort_by_response",
            "sender_address": meta["sender"],
            "position": {"index": meta["position"]["index"], "microblock_identifier": None},
            "result": {"hex": "0x", "repr": meta["result"]},
            "nonce": meta.get("nonce", 0),
            "fee_rate": str(meta["fee"]),
            "canonical": True,
        },
    }


def v2_from_v1(v1: dict[str, Any], *, network: str = "testnet") -> dict[str, Any]:
    def block(b: dict[str, Any]) -> dict[str, Any]:
        return {"block_identifier": b["block_identifier"], "parent_block_identifier": b["parent_block_identifier"],
                "timestamp": b["timestamp"], "transactions": [_transaction(t) for t in b["transactions"]]}

    return {
        "event": {"chain": "stacks", "network": network, "apply": [block(b) for b in v1["apply"]],
                  "rollback": [block(b) for b in v1["rollback"]]},
        "chainhook": {"uuid": "2f1b4c1e-0000-4000-8000-000000000002", "name": "timebank-test"},
    }


# The token transfer from the published payload-anatomy example, as one whole 2.0 delivery.
DIKO_TRANSFER: dict[str, Any] = {
    "event": {
        "chain": "stacks",
        "network": "mainnet",
        "rollback": [],
        "apply": [{
            "timestamp": 1757977309,
            "block_identifier": {"hash": "0xa204da7e0d8bb9a7c2f8a1f05e1ccdd1e1f15be0a4c2f5a6c0d9e7b3a1c2d3e4",
                                 "index": 3549902},
            "parent_block_identifier": {"hash": "0xad0acff0", "index": 3549901},
            "transactions": [{
                "transaction_identifier": {
                    "hash": "0x09defc9a6cd9318b5c458389d4dd57597203ec539818aec0de3cfcfd7af0c2ab"},
                "metadata": {
                    "type": "contract_call", "nonce": 6689, "result": {"hex": "0x0703", "repr": "(ok true)"},
                    "status": "success", "fee_rate": "3000",
                    "position": {"index": 0, "microblock_identifier": None},
                    "sender_address": "SPV2YDN4RZ506655KZK493YKM31JQPKJ9NN3QCX9", "sponsor_address": None,
                    "canonical": True, "sponsored": False, "microblock_canonical": True,
                },
                "operations": [
                    {"type": "fee", "status": "success", "operation_identifier": {"index": 0},
                     "account": {"address": "SPV2YDN4RZ506655KZK493YKM31JQPKJ9NN3QCX9"},
                     "amount": {"value": "-3000", "currency": {"symbol": "STX", "decimals": 6}},
                     "metadata": {"sponsored": False}},
                    {"type": "contract_call", "status": "success", "operation_identifier": {"index": 1},
                     "account": {"address": "SPV2YDN4RZ506655KZK493YKM31JQPKJ9NN3QCX9"},
                     "metadata": {"contract_identifier": "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-token",
                                  "function_name": "transfer", "args": None}},
                    {"type": "token_transfer", "status": "success", "operation_identifier": {"index": 2},
                     "account": {"address": "SPV2YDN4RZ506655KZK493YKM31JQPKJ9NN3QCX9"},
                     "amount": {"value": "-10352515582", "currency": {"symbol": "", "decimals": 0, "metadata": {
                         "token_type": "ft",
                         "asset_identifier": "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-token::diko"}}}},
                    {"type": "token_transfer", "status": "success", "operation_identifier": {"index": 3},
                     "account": {"address": "SPBM1X391HWMCVHKH6GK8XJRDR6B7REZQYQ8KBCK"},
                     "amount": {"value": "10352515582", "currency": {"symbol": "", "decimals": 0, "metadata": {
                         "token_type": "ft",
                         "asset_identifier": "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-token::diko"}}}},
                    {"type": "contract_log", "status": "success", "operation_identifier": {"index": 4},
                     "metadata": {"topic": "print", "value": "0x09",
                                  "contract_identifier": "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-token"}},
                ],
            }],
        }],
    },
    "chainhook": {"name": "my-chainhook", "uuid": "be4ab3ed-b606-4fe0-97c4-6c0b1ac9b185"},
}
