"""What the gateway's logs keep: one line per thing that matters, not one per job or HTTP call."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from metagov import logs


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()}")


@pytest.fixture
def configured() -> Iterator[Collect]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    collect = Collect()
    yield collect
    root.handlers[:], level = saved
    root.setLevel(level)
    logs.configure("WARNING", "text")  # leave no filter behind that would hide test output


def emit_a_busy_second() -> None:
    arq = logging.getLogger("arq.worker")
    arq.info("Starting worker for %d functions: %s", 5, "deliver, ...")
    arq.info("%6.2fs → %s(%s)", 0.01, "handle_webhook:7", "7")
    arq.info("%6.2fs ← %s ● %s", 0.02, "handle_webhook:7", "None")
    arq.warning("job %s expired", "x")
    logging.getLogger("httpx").info('HTTP Request: POST http://driver/events "HTTP/1.1 200 OK"')
    logging.getLogger("metagov.outbox.handlers").info("delivery attempt")


def test_info_drops_per_job_and_per_request_lines(configured: Collect) -> None:
    logs.configure("INFO", "text")
    logging.getLogger().addHandler(configured)
    emit_a_busy_second()
    assert configured.lines == [
        "arq.worker Starting worker for 5 functions: deliver, ...",
        "arq.worker job x expired",
        "metagov.outbox.handlers delivery attempt",
    ]


def test_debug_keeps_everything(configured: Collect) -> None:
    logs.configure("DEBUG", "text")
    logging.getLogger().addHandler(configured)
    emit_a_busy_second()
    assert len(configured.lines) == 6


def test_text_format_shows_the_fields_json_has() -> None:
    record = logging.makeLogRecord(
        {
            "name": "metagov.inbox.service",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "webhook rejected",
            "plugin": "slack",
            "reason": "bad_signature",
            "inbox_id": 7,
            "note": "two words",
            "missing": None,
            "api_key": "mgk_secret",
            "webhook_secret": "whsec_x",
        }
    )
    line = logs.TextFormatter().format(record)
    assert line.endswith(
        " INFO metagov.inbox.service webhook rejected plugin=slack reason=bad_signature "
        'inbox_id=7 note="two words" missing=null'
    ), line
    assert "mgk_secret" not in line and "whsec_x" not in line
    as_json = logs.JSONFormatter().format(record)
    for field in ("plugin", "reason", "inbox_id", "note"):
        assert f'"{field}"' in as_json


def test_text_format_without_fields_is_unchanged() -> None:
    record = logging.makeLogRecord(
        {
            "name": "x",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "plain %s",
            "args": ("line",),
        }
    )
    assert logs.TextFormatter().format(record).endswith(" WARNING x plain line")
