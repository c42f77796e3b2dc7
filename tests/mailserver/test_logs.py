"""The JSON log line (mailserver.logs): what an admin's log tooling parses, one object per line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from mailserver.logs import JSONFormatter


def _record(created: float, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("smtp_in", logging.INFO, __file__, 1, "smtp message %s", ("accepted",), None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_line_has_the_time_level_logger_event_and_extra_fields_only() -> None:
    line = JSONFormatter().format(_record(1796000000.25, listener="mx", message_row=7, queued=False,
                                          peer=None, path=Path("/x"), _private="no"))
    assert json.loads(line) == {"ts": "2026-11-30T00:53:20.250Z", "level": "info", "logger": "smtp_in",
                                "event": "smtp message accepted", "listener": "mx", "message_row": 7,
                                "queued": False, "peer": None, "path": "/x"}


def test_the_time_follows_each_record_across_and_within_seconds() -> None:
    fmt = JSONFormatter()
    stamps = [json.loads(fmt.format(_record(t)))["ts"] for t in (1796000000.125, 1796000000.875, 1796000001.5,
                                                                 1795999999.0)]
    assert stamps == ["2026-11-30T00:53:20.125Z", "2026-11-30T00:53:20.875Z", "2026-11-30T00:53:21.500Z",
                      "2026-11-30T00:53:19.000Z"]


def test_an_exception_and_non_ascii_text_stay_in_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = _record(1796000000.0, sender="jörg@example.org")
        record.exc_info = sys.exc_info()
    line = JSONFormatter().format(record)
    assert "\n" not in line and "jörg" in line
    parsed = json.loads(line)
    assert parsed["exception"].startswith("Traceback") and "ValueError: bad\nthing" in parsed["exception"]
