"""Readers for the copied test vectors (tests/data), shared by the DKIM and ARC tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATA = Path(__file__).parents[2] / "data"


def read_mail_auth(path: Path) -> tuple[dict[str, dict[str, Any]], bytes]:
    """A mail-auth vector: `name value` DNS lines, a blank line, then the message."""
    data = path.read_bytes()
    dns_part, message = data.split(b"\n\n", 1)
    records: dict[str, dict[str, Any]] = {}
    for line in dns_part.decode("utf-8").splitlines():
        if line.strip():
            name, value = line.split(" ", 1)
            records.setdefault(name, {"TXT": []})["TXT"].append(value)
    return records, message
