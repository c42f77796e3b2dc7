"""MTA-STS (RFC 8461): the DNS record and the policy file, parsed, and the MX patterns matched.

A domain publishes `_mta-sts.<domain>` TXT `v=STSv1; id=...` and, over HTTPS at
`https://mta-sts.<domain>/.well-known/mta-sts.txt`, a policy: a mode (enforce, testing, none), the MX
host patterns it allows and how long to keep it. In enforce mode, a sender delivers only to MX hosts
the policy names, over TLS with a certificate valid for the host's name, or not at all.
Pure functions (no I/O): fetching and caching are `smtp_out.mtasts`'s.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MAX_AGE = 31_557_600  # RFC 8461 §3.2: max_age is at most a year
MAX_POLICY_SIZE = 64 * 1024  # RFC 8461 §3.3: senders may refuse larger policies
MODES = ("enforce", "testing", "none")
PUBLISHED_MAX_AGE = 604_800  # a week: what we publish for our own domains

_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
_FIELD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")


def published(mode: str, mx: list[str], max_age: int = PUBLISHED_MAX_AGE) -> tuple[str, str]:
    """Our own policy file for `mode` and MX hosts, and the id its `_mta-sts` record carries: a digest of
    the text, so the id changes exactly when the policy does (RFC 8461 §3.1 asks for a new id then)."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {host.rstrip('.').lower()}" for host in mx),
             f"max_age: {max_age}"]
    text = "".join(line + "\r\n" for line in lines)
    return text, hashlib.sha256(text.encode()).hexdigest()[:20]


def record_id(txt_records: list[str]) -> str | None:
    """The policy id of a domain's `_mta-sts` TXT records, or None when there is no usable record:
    records not starting with `v=STSv1;` are ignored; zero, or more than one left, or one that does
    not parse, means no policy (RFC 8461 §3.1)."""
    records = [r for r in txt_records if re.match(r"v=STSv1\s*;", r)]
    if len(records) != 1:
        return None
    fields: dict[str, str] = {}
    for part in records[0].split(";"):
        part = part.strip(" \t")
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not _FIELD.match(key) or key in fields:
            return None
        fields[key] = value
    policy_id = fields.get("id", "")
    return policy_id if _ID.match(policy_id) else None


@dataclass(frozen=True)
class Policy:
    """A parsed policy. `mx` holds the patterns as published, lower case."""

    mode: str
    mx: tuple[str, ...]
    max_age: int

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    def allows(self, host: str) -> bool:
        """Whether MX host `host` matches a pattern: the name itself, or `*.rest` for exactly one more
        label on the left (RFC 8461 §4.1)."""
        host = host.rstrip(".").lower()
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, dot, rest = host.partition(".")
                if dot and label and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_policy(text: str) -> Policy:
    """The policy file's text (RFC 8461 §3.2: `key: value` lines, CRLF or LF); ValueError when it is
    not a valid STSv1 policy. Unknown keys are ignored, as the RFC asks."""
    values: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"not a policy line: {line[:80]!r}")
        values.setdefault(key.strip().lower(), []).append(value.strip(" \t"))
    if values.get("version") != ["STSv1"]:
        raise ValueError("version is not STSv1")
    mode = values.get("mode", [""])
    if len(mode) != 1 or mode[0] not in MODES:
        raise ValueError(f"mode is not one of {', '.join(MODES)}")
    age = values.get("max_age", [""])
    if len(age) != 1 or not age[0].isascii() or not age[0].isdigit() or len(age[0]) > 10:
        raise ValueError("max_age is not a number")
    mx = tuple(p.rstrip(".").lower() for p in values.get("mx", []))
    if not mx and mode[0] != "none":
        raise ValueError("no mx patterns")
    return Policy(mode=mode[0], mx=mx, max_age=min(int(age[0]), MAX_AGE))
