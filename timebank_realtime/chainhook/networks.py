"""Which Stacks network a delivery is from. Pure.

Chainhooks 2.0 names it (``event.network``). A v1 payload does not: its principals do, through their
c32 version character (``SP``/``SM`` mainnet, ``ST``/``SN`` testnet; regtest and devnet nodes use
testnet addresses). A setting can name the network of a Chainhook by its uuid, which wins over both:
it is how an operator tells a devnet from a testnet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from .principals import C32_ALPHABET

NO_OVERRIDES: Mapping[str, str] = MappingProxyType({})
UNKNOWN = "unknown"  # a delivery that names no network and no principal (e.g. only empty blocks)
_NETWORK_OF_VERSION = {22: "mainnet", 20: "mainnet", 26: "testnet", 21: "testnet"}
_NETWORK_OF_CHARACTER = {C32_ALPHABET[version]: name for version, name in _NETWORK_OF_VERSION.items()}


def network_of_principal(principal: str) -> str | None:
    """The network a (validated) principal belongs to, by its version character; None if no known one."""
    return _NETWORK_OF_CHARACTER.get(principal[1:2]) if principal.startswith("S") else None


def first_network(principals: Iterable[str]) -> str | None:
    """The network of the first principal that names one."""
    for principal in principals:
        network = network_of_principal(principal)
        if network is not None:
            return network
    return None


def resolve_network(*, chainhook_uuid: str, named: str | None, derived: str | None,
                    overrides: Mapping[str, str]) -> str:
    """The network of a delivery: the operator's word for its Chainhook, else the payload's (in lower
    case, as filters compare it), else what its principals say."""
    return overrides.get(chainhook_uuid) or (named or "").strip().lower() or derived or UNKNOWN
