"""The OpenAPI 3 description of the HTTP API, served at /api/openapi.json (tests hold the handlers to it)."""

from __future__ import annotations

from typing import Any

from ..events import DEFAULT_LIMIT, EVENT_TYPES
from .queries import MAX_INTEGER, MAX_LIMIT

_CURSOR = {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER}
_TX_HASH = {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description, **extra}


_EVENT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "cursor", "tx_hash", "block_height", "block_hash", "tx_index", "event_index", "contract_id",
                 "event_type", "event_data", "affected_addresses", "success", "timestamp", "network",
                 "chainhook_uuid", "asset_identifier", "canonical"],
    "properties": {
        "id": {"type": "integer"},
        "cursor": {"type": "integer", "description": "Cursor of the event's newest change (apply, rollback, restore)."},
        "tx_hash": {"type": "string"},
        "block_height": {"type": "integer"},
        "block_hash": {"type": "string"},
        "tx_index": {"type": "integer"},
        "event_index": {"type": "integer", "minimum": -1, "description": "-1 for a transaction's own row."},
        "contract_id": {"type": "string"},
        "event_type": {"type": "string", "enum": list(EVENT_TYPES)},
        "event_data": {"type": "object"},
        "affected_addresses": {"type": "array", "items": {"type": "string"}},
        "success": {"type": "boolean"},
        "timestamp": {"type": "string", "format": "date-time"},
        "network": {"type": "string", "description": "mainnet, testnet, ... (docs/normalization.md#networks)."},
        "chainhook_uuid": {"type": "string",
                           "description": "The Chainhook that delivered it ('' for rows stored before it was kept)."},
        "asset_identifier": {"type": "string", "nullable": True,
                             "description": "The FT/NFT asset (SP….token::name) of an ft_/nft_ event."},
        "canonical": {"type": "boolean"},
    },
}

_TIPS = {"type": "object", "description": "Each network's highest canonical block.",
         "additionalProperties": {"type": "object", "required": ["block_height", "block_hash"], "properties": {
             "block_height": {"type": "integer"}, "block_hash": {"type": "string"}}}}

_STATUS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["cursor", "events_stored", "events_rolled_back", "chain_tip", "chain_tips", "last_delivery",
                 "chainhooks", "sockets", "subscriptions"],
    "properties": {
        "cursor": {"type": "integer"},
        "events_stored": {"type": "integer"},
        "events_rolled_back": {"type": "integer"},
        "chain_tip": {"type": "object", "required": ["block_height", "block_hash"], "properties": {
            "block_height": {"type": "integer", "nullable": True},
            "block_hash": {"type": "string", "nullable": True}}},
        "chain_tips": _TIPS,
        "last_delivery": {"type": "object", "nullable": True, "required": ["at", "format"], "properties": {
            "at": {"type": "string", "format": "date-time"}, "format": {"type": "string", "enum": ["v1", "v2"]}}},
        "chainhooks": {"type": "array", "items": {
            "type": "object",
            "required": ["chainhook_uuid", "source_format", "network", "last_block_height", "last_delivery_at",
                         "deliveries"],
            "properties": {"chainhook_uuid": {"type": "string"},
                           "source_format": {"type": "string", "enum": ["v1", "v2"]},
                           "network": {"type": "string"},
                           "last_block_height": {"type": "integer", "nullable": True},
                           "last_delivery_at": {"type": "string", "format": "date-time"},
                           "deliveries": {"type": "integer"}}}},
        "sockets": {"type": "integer"},
        "subscriptions": {"type": "integer"},
    },
}

_READY = {
    "type": "object", "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ready", "unready"]}, "cursor": {"type": "integer"},
                   "chain_tips": _TIPS,
                   "reasons": {"type": "array", "items": {"type": "string"}}},
}

_EVENTS_PARAMETERS = [
    _query("contract", {"type": "string", "minLength": 1}, "Contract principal (SP….name) the event belongs to."),
    _query("address", {"type": "string", "minLength": 1}, "Principal among the event's affected addresses."),
    _query("event_type", {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}},
           "Event type; repeat for any of several.", style="form", explode=True),
    _query("tx_hash", _TX_HASH, "Transaction hash."),
    _query("asset", {"type": "string", "minLength": 1}, "FT/NFT asset (SP….token::name) an ft_/nft_ event moves."),
    _query("network", {"type": "string", "minLength": 1, "maxLength": 64}, "Network: mainnet, testnet, ..."),
    _query("from_height", _CURSOR, "Lowest block height."),
    _query("to_height", _CURSOR, "Highest block height."),
    _query("success", {"type": "boolean"}, "Only events of successful (true) or failed (false) transactions."),
    _query("include_rolled_back", {"type": "boolean", "default": False}, "Include non-canonical events."),
    _query("after", _CURSOR, "Only events whose cursor is above this (ascending pages: the previous `next`)."),
    _query("before", _CURSOR, "Only events whose cursor is below this (descending pages: the previous `next`)."),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
           "Page size."),
    _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}, "Cursor order."),
]


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "timebank-realtime", "version": "0.1.0",
                 "description": "Stacks events from Chainhook: webhook target and event history. "
                                "Live changes are pushed over Socket.IO (see docs/protocol.md)."},
        "paths": {
            "/api/events": {"get": {
                "summary": "Page through stored events by cursor (keyset pagination).",
                "parameters": _EVENTS_PARAMETERS,
                "responses": {"200": _json(_ref("EventPage"), "A page of events."),
                              "400": _error("A parameter is invalid; `param` names it."),
                              "503": _error("The event store is unreachable.")}}},
            "/api/events/{id}": {"get": {
                "summary": "One event.",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": _CURSOR}],
                "responses": {"200": _json(_ref("Event"), "The event."), "400": _error("Not an event id."),
                              "404": _error("No such event."), "503": _error("The event store is unreachable.")}}},
            "/api/transactions/{tx_hash}": {"get": {
                "summary": "All events of a transaction, canonical first.",
                "parameters": [{"name": "tx_hash", "in": "path", "required": True, "schema": _TX_HASH}],
                "responses": {"200": _json(_ref("Transaction"), "The transaction's events."),
                              "400": _error("Not a transaction hash."), "404": _error("No events for it."),
                              "503": _error("The event store is unreachable.")}}},
            "/api/status": {"get": {
                "summary": "What the service has seen and who is connected.",
                "responses": {"200": _json(_ref("Status"), "Status."),
                              "503": _error("The event store is unreachable.")}}},
            "/api/webhooks/chainhook": {"post": {
                "summary": "Chainhook v1 or Chainhooks 2.0 webhook delivery.",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": _json(_ref("DeliveryResult"), "Stored."),
                              "400": _error("Not JSON (`invalid_json`), a body that does not decode as its "
                                            "Content-Encoding (`invalid_content_encoding`), or malformed HTTP "
                                            "(`bad_request`)."),
                              "401": _error("Bad or missing secret."),
                              "413": _error("Body too large, before or after decoding its Content-Encoding."),
                              "415": {**_error("A Content-Encoding other than gzip, x-gzip, deflate or identity "
                                               "(`unsupported_content_encoding`)."),
                                      "headers": {"Accept-Encoding": {"schema": {"type": "string"},
                                                                      "description": "The codings taken."}}},
                              "422": _error("Not a Chainhook payload."),
                              "500": _error("An unexpected failure (`internal_error`); nothing was stored."),
                              "503": _error("The event store is unreachable; nothing was stored.")}}},
            "/healthz": {"get": {"summary": "The process is alive.",
                                 "responses": {"200": _json({"type": "object"}, "Alive.")}}},
            "/readyz": {"get": {"summary": "Database reachable, migrations applied, tailer keeping up.",
                                "responses": {"200": _json(_READY, "Ready."), "503": _json(_READY, "Not ready.")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {"200": {
                "description": "Prometheus text format.",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {"schemas": {
            "Event": _EVENT,
            "EventPage": {"type": "object", "additionalProperties": False, "required": ["events", "next"],
                          "properties": {"events": {"type": "array", "items": _ref("Event")},
                                         "next": {"type": "integer", "nullable": True}}},
            "Transaction": {"type": "object", "additionalProperties": False, "required": ["tx_hash", "events"],
                            "properties": {"tx_hash": {"type": "string"},
                                           "events": {"type": "array", "items": _ref("Event")}}},
            "Status": _STATUS,
            "DeliveryResult": {"type": "object", "additionalProperties": False,
                               "required": ["applied", "duplicates", "rolled_back", "restored", "cursor"],
                               "properties": {k: {"type": "integer"} for k in
                                              ("applied", "duplicates", "rolled_back", "restored")}
                               | {"cursor": {"type": "integer", "nullable": True}}},
            "Error": {"type": "object", "additionalProperties": False, "required": ["error"], "properties": {
                "error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "path": {"type": "string"}, "param": {"type": "string"}}}}},
        }},
    }
