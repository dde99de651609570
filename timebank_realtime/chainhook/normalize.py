"""Turn a Chainhook payload (v1 or 2.0) into a Delivery of event rows in the shared vocabulary.

Pure code: no I/O. The rules (which field becomes which column, how 2.0 operations pair into
transfers) live in v1.py and v2.py and are documented in docs/normalization.md; keep
the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..events import Delivery
from ..jsoncodec import loads_payload
from . import v1, v2
from .models import Payload, V1Payload, parse_payload
from .networks import NO_OVERRIDES


def normalize(payload: Payload, networks: Mapping[str, str] = NO_OVERRIDES) -> Delivery:
    """``networks``: the operator's network for a Chainhook uuid, over what the payload says."""
    if isinstance(payload, V1Payload):
        return v1.normalize(payload, networks)
    return v2.normalize(payload, networks)


def parse_delivery(body: bytes | bytearray, networks: Mapping[str, str] = NO_OVERRIDES) -> Delivery:
    """A whole body, parsed, validated and normalized. Raises UnicodeDecodeError or
    json.JSONDecodeError (not JSON) and PayloadError (not a Chainhook payload we can store)."""
    return normalize(parse_payload(loads_payload(body)), networks)
