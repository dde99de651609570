"""The exact rows each shared fixture must produce, written out by hand from the fixtures.

Each row: (event_type, tx_hash prefix, tx_index, event_index, contract_id, affected_addresses, success).
Order is the order of the change log: block, then transaction, then event position.
"""

from __future__ import annotations

from typing import Any

Row = tuple[str, str, int, int, str, tuple[str, ...], bool]

BNS = "ST000000000000000000002AMW42H.bns"
BNS_A = "ST3YFTC2T8AWRBN8FNYP0B8E42F954SYSN3MCCNW5"
BNS_B = "ST3AA80C5N4SP0C4NTFKE4TDN0S6QGV9A1S7GP9CG"
MONSTERS = "ST3FFRX7C911PZP5RHE148YDVDD9JWVS6FZRA60VS.monsters"
MINTER = "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2"
POX4 = "ST000000000000000000002AMW42H.pox-4"
STACKERS = ("ST3AM1A56AK2C1XAFJ4115ZSV26EB49BVQ10MGCS0", "ST3PF13W7Z0RRM42A8VZRVFQ75SV1K26RXEP8YGKJ",
            "ST3NBRSFKX28FQ2ZJ1MAKX58HKHSDGNV5N7R21XCP")
ARKADIKO_USER = "SPWKDKPZ3QDPQGDADWJ3EWPAP14CB1N1HDQ897W5"
FREDDIE = "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-freddie-v1-1"
RESERVE = "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-stx-reserve-v1-1"
SUBNET = "ST13F481SBR0R7Z6NMMH8YV2FJJYXA5JPA0AD3HP9.subnet-v1"
SUBNET_SENDER = "ST13F481SBR0R7Z6NMMH8YV2FJJYXA5JPA0AD3HP9"
NAKAMOTO = ("ST319CF5WV77KYR1H3GT0GZ7B8Q4AQPY42ETP1VPF", "ST221Z6TDTC5E0BYR2V624Q2ST6R0Q71T78WTAX6H",
            "ST2TFVBMRPS5SSNP98DQKQ5JNB2B6NZM91C4K3P7B", "ST38RMDQFVC462DSJ1CPEW5EYXEZKASQVC8XDGARN")

EXPECTED_ROWS: dict[str, list[Row]] = {
    "v1-stacks-print-event-arkadiko-mainnet-2023.json": [
        ("contract_call", "0x580d89b7", 16, -1, FREDDIE, (ARKADIKO_USER,), True),
        ("ft_mint_event", "0x580d89b7", 16, 0, "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.usda-token",
         (ARKADIKO_USER,), True),
        ("print_event", "0x580d89b7", 16, 1, FREDDIE, (ARKADIKO_USER,), True),
        ("stx_transfer_event", "0x580d89b7", 16, 2, FREDDIE, (ARKADIKO_USER, RESERVE), True),
        ("print_event", "0x580d89b7", 16, 3, "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-dao",
         (ARKADIKO_USER,), True),
        ("print_event", "0x580d89b7", 16, 4, RESERVE, (ARKADIKO_USER,), True),
    ],
    "v1-stacks-contract-call-bns-testnet-2023.json": [
        ("contract_call", "0x2859f6b9", 3, -1, BNS, (BNS_A,), True),
        ("print_event", "0x2859f6b9", 3, 0, BNS, (BNS_A,), True),
        ("contract_call", "0x1d56d6ec", 4, -1, BNS, (BNS_A,), False),
        ("contract_call", "0x7ebd689c", 5, -1, BNS, (BNS_A,), False),
        ("contract_call", "0xbf359afb", 6, -1, BNS, (BNS_A,), False),
        ("contract_call", "0xbdcd25c5", 8, -1, BNS, (BNS_A,), False),
        ("contract_call", "0x7e330b92", 9, -1, BNS, (BNS_B,), True),
        ("print_event", "0x7e330b92", 9, 0, BNS, (BNS_B,), True),
    ],
    "v1-stacks-nakamoto-testnet-nft-mint-print-event.json": [
        ("contract_call", "0x8a99f0e1", 0, -1, MONSTERS, (MINTER,), True),
        ("nft_mint_event", "0x8a99f0e1", 0, 0, MONSTERS, (MINTER,), True),
        ("print_event", "0x8a99f0e1", 0, 1, MONSTERS, (MINTER,), True),
        ("print_event", "0x8a99f0e1", 0, 2, MONSTERS, (MINTER,), True),
        ("stx_transfer_event", "0xca90fda3", 1, 3, "", (NAKAMOTO[0], NAKAMOTO[1]), True),
    ],
    "v1-stacks-nakamoto-testnet-stx-transfer-block-height-scope.json": [
        ("stx_transfer_event", "0xd4454813", 0, 0, "", (NAKAMOTO[1], NAKAMOTO[2]), True),
        ("stx_transfer_event", "0x74cee6ec", 1, 1, "", (NAKAMOTO[2], NAKAMOTO[3]), True),
    ],
    "v1-stacks-regtest-stx-lock-event.json": [
        row
        for tx, (stacker, prefix) in enumerate(zip(STACKERS, ["0x5543f3d5", "0x02d59d50", "0x282141e7"],
                                                   strict=True))
        for row in [
            ("contract_call", prefix, tx + 1, -1, POX4, (stacker,), True),
            *sorted([("print_event", prefix, tx + 1, 2 * tx, POX4, (stacker,), True),
                     ("stx_lock_event", prefix, tx + 1, [1, 3, 5][tx], POX4, (stacker,), True)],
                    key=lambda r: r[3]),
        ]
    ],
    # Placeholder data from Chainhook's own test suite: 13 blocks share block hash "0x" and one tx
    # hash, so after the first block every row repeats the natural key and is a duplicate.
    "v1-stacks-decoded-all-asset-event-types-with-rollback.json": [
        ("contract_call", "0xb92c2ade", 1, -1, SUBNET, (SUBNET_SENDER,), True),
        ("stx_transfer_event", "0xb92c2ade", 1, 0, SUBNET, (SUBNET_SENDER,), True),
    ],
    # Signer messages only: nothing to store.
    "v1-stacks-regtest-signer-message-events.json": [],
}

# Decoded print values (raw_value decoded by us, or value as Chainhook sent it), by (fixture, row).
EXPECTED_VALUES: dict[tuple[str, int], Any] = {
    ("v1-stacks-print-event-arkadiko-mainnet-2023.json", 4): {
        "action": "minted",
        "data": {"amount": "130000000", "recipient": ARKADIKO_USER},
        "type": "token",
    },
    ("v1-stacks-print-event-arkadiko-mainnet-2023.json", 5): {"ok": True},
    ("v1-stacks-contract-call-bns-testnet-2023.json", 1): {
        "attachment": {"attachment-index": "95", "hash": "0x", "metadata": {
            "name": "0x796179616d61", "namespace": "0x627463", "op": "name-revoke", "tx-sender": BNS_A}},
    },
    ("v1-stacks-nakamoto-testnet-nft-mint-print-event.json", 1): "33",
    ("v1-stacks-nakamoto-testnet-nft-mint-print-event.json", 2): "1730551071",
}


def row_tuple(row: Any) -> Row:
    """The comparable form of a stored record or an EventRow."""
    get = row.__getitem__ if isinstance(row, dict) or hasattr(row, "keys") else lambda k: getattr(row, k)
    return (get("event_type"), get("tx_hash")[:10], get("tx_index"), get("event_index"), get("contract_id"),
            tuple(get("affected_addresses")), get("success"))
