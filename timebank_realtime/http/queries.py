"""Query parameters of GET /api/events, parsed and validated into an EventQuery (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..events import DEFAULT_LIMIT, EventQuery
from ..realtime.subscriptions import FilterError, validate_value

MAX_LIMIT = 1000
_SINGLE = ("contract", "address", "tx_hash", "asset", "network", "from_height", "to_height", "success",
           "include_rolled_back", "after", "before", "limit", "order")
_REPEATABLE = ("event_type",)
PARAMETERS = _SINGLE + _REPEATABLE


class ParamError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


MAX_INTEGER = 999_999_999_999_999_999  # 18 digits: every value fits a PostgreSQL bigint


def parse_integer(param: str, raw: str, *, minimum: int = 0, maximum: int = MAX_INTEGER) -> int:
    # ASCII digits only: str.isdigit() also takes "²" (which int() refuses) and "١٢" (which it reads as 12).
    if not (raw.isascii() and raw.isdigit()):
        raise ParamError(param, f"{raw!r} is not a whole number in decimal digits")
    if len(raw) > len(str(MAX_INTEGER)) or not minimum <= int(raw) <= maximum:
        raise ParamError(param, f"must be between {minimum} and {maximum}")
    return int(raw)


def _boolean(param: str, raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ParamError(param, "must be true or false")
    return raw == "true"


def _filter_value(param: str, name: str, raw: str) -> str:
    try:
        return validate_value(name, raw)
    except FilterError as error:
        raise ParamError(param, error.message) from None


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise ParamError(name, "may be given once")
    return values[0] if values else None


def parse_event_query(params: Mapping[str, Sequence[str]]) -> EventQuery:
    """``params``: every query parameter with all its values. Raises ParamError naming the parameter."""
    for name in params:
        if name not in PARAMETERS:
            raise ParamError(name, f"unknown parameter; known: {', '.join(PARAMETERS)}")
    raw = {name: _single(params, name) for name in _SINGLE}
    # An empty value is a value (and never a valid one), not an absent parameter.
    order = raw["order"] if raw["order"] is not None else "asc"
    if order not in ("asc", "desc"):
        raise ParamError("order", "must be asc or desc")

    def optional_integer(name: str) -> int | None:
        value = raw[name]
        return parse_integer(name, value) if value is not None else None

    def optional_filter(name: str) -> str | None:
        value = raw[name]
        return _filter_value(name, name, value) if value is not None else None

    query = EventQuery(
        contract=optional_filter("contract"),
        address=optional_filter("address"),
        event_types=tuple(_filter_value("event_type", "event_type", v) for v in params.get("event_type", [])),
        tx_hash=optional_filter("tx_hash"),
        asset=optional_filter("asset"),
        network=optional_filter("network"),
        from_height=optional_integer("from_height"),
        to_height=optional_integer("to_height"),
        success=_boolean("success", raw["success"]) if raw["success"] is not None else None,
        include_rolled_back=_boolean("include_rolled_back", raw["include_rolled_back"])
        if raw["include_rolled_back"] is not None else False,
        after=optional_integer("after"),
        before=optional_integer("before"),
        limit=parse_integer("limit", raw["limit"], minimum=1, maximum=MAX_LIMIT) if raw["limit"] is not None
        else DEFAULT_LIMIT,
        order="desc" if order == "desc" else "asc",
    )
    if query.from_height is not None and query.to_height is not None and query.from_height > query.to_height:
        raise ParamError("from_height", "must not be above to_height")
    return query
