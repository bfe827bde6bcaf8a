"""Logging setup: plain text for people, JSON lines for log pipelines.

Records carry ids (``delivery_id``, ``webhook_id``, ``inbox_id``, ``community``, ``plugin`` …)
as ``extra`` fields, which the JSON format emits as keys and the text format appends as
``key=value``: the same facts in either format. Secrets are never passed to a logger, and both
formatters drop any extra whose name suggests one, as a second line of defence.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# Standard record attributes, and uvicorn's duplicate of the message with terminal colours.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_SECRETISH = ("secret", "token", "password", "api_key", "authorization")


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record carries beyond the standard ones, less any that could be a secret."""
    found: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD or key.startswith("_"):
            continue
        if any(word in key.lower() for word in _SECRETISH):
            continue
        plain = isinstance(value, str | int | float | bool | None)
        found[key] = value if plain else str(value)
    return found


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _text_value(value: Any) -> str:
    """A value as ``key=value`` shows it: bare when it is one word, JSON-quoted otherwise, so a
    line still splits into its fields."""
    if value is None:
        return "null"
    shown = str(value)
    if shown and not any(c.isspace() or c in '"=' for c in shown):
        return shown
    return json.dumps(shown)


class TextFormatter(logging.Formatter):
    """One line per record for people: time, level, logger, message, then the record's fields
    as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = extra_fields(record)
        if not fields:
            return line
        return line + " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())


class _ArqJobLines(logging.Filter):
    """Drop arq's two lines per job (``→`` started, ``←`` finished). At thousands of jobs a
    second they are most of a worker's log and a real share of its CPU; what a job did is in the
    database, and its failures are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        return "→" not in message and "←" not in message


# Loggers that write a line per HTTP request or per job at INFO: quiet unless the level is DEBUG.
_CHATTY = ("httpx", "httpcore")
# Lines about the tools' own machinery, not about what the gateway does.
_QUIET = ("alembic.runtime.plugins",)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter())
    from metagov import tracing

    if tracing.enabled():
        handler.addFilter(tracing.TraceIds())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    debug = root.isEnabledFor(logging.DEBUG)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    arq_worker = logging.getLogger("arq.worker")
    for existing in [f for f in arq_worker.filters if isinstance(f, _ArqJobLines)]:
        arq_worker.removeFilter(existing)
    if not debug:
        arq_worker.addFilter(_ArqJobLines())
