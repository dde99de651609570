import pytest

from timebank_realtime.chainhook.principals import (
    InvalidPrincipal,
    c32_decode,
    c32_encode,
    decode_standard_principal,
    encode_standard_principal,
    is_principal,
    validate_contract_id,
    validate_principal,
)

REAL_ADDRESSES = [
    "SPWKDKPZ3QDPQGDADWJ3EWPAP14CB1N1HDQ897W5",
    "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR",
    "ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2",
    "ST000000000000000000002AMW42H",
]


def test_boot_address_is_version_26_with_a_zero_hash() -> None:
    assert encode_standard_principal(26, bytes(20)) == "ST000000000000000000002AMW42H"
    assert decode_standard_principal("ST000000000000000000002AMW42H") == (26, bytes(20))


@pytest.mark.parametrize("address", REAL_ADDRESSES)
def test_real_addresses_round_trip(address: str) -> None:
    version, hash160 = decode_standard_principal(address)
    assert encode_standard_principal(version, hash160) == address


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M3", "checksum"),
        ("st16gew6p7gbgzg0pxrxfjemr3tjhjey2hhfn76m2", "does not start"),
        ("XT16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2", "does not start"),
        ("ST16GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76", "20-byte"),
        ("STU6GEW6P7GBGZG0PXRXFJEMR3TJHJEY2HHFN76M2", "c32 character"),
        ("S", "does not start"),
    ],
)
def test_bad_addresses_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidPrincipal, match=reason):
        decode_standard_principal(text)
    assert not is_principal(text)


def test_contract_ids() -> None:
    good = "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.arkadiko-stx-reserve-v1-1"
    assert validate_contract_id(good) == good
    assert validate_principal(good) == good
    for bad in ["SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR", "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.1abc",
                "SP2C2YFP12AJZB4MABJBAJ55XECVS7E4PMMZ89YZR.", "nope.contract"]:
        with pytest.raises(InvalidPrincipal):
            validate_contract_id(bad)


def test_c32_keeps_leading_zero_bytes() -> None:
    for data in [b"", b"\0", b"\0\0\x01", b"\xff" * 24, bytes(range(24))]:
        assert c32_decode(c32_encode(data)) == data
