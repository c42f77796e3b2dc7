"""Malformed but legal-to-carry header bytes never make a message undeliverable.

The MIME corpus (tests/data/mime) is sent through the real MX listener with bytes of its header blocks
replaced by ones a broken or hostile mailer writes: 8-bit bytes (a raw Latin-1 filename), quotes,
backslashes, encoded-word and RFC 2231 punctuation. No CR, LF or NUL is written and no line grows, so
every such message is acceptable SMTP content: each must get 250 and be stored, never 451 (which tells the
sender to retry a message that can never be taken). Seeded: the same mutations every run.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import aiosmtplib
import pytest

from tests.smtp_in.harness import USER, Server

CORPUS = {f"{p.parent.name}/{p.name}": p.read_bytes()
          for p in sorted((Path(__file__).parents[1] / "data" / "mime").rglob("*"))
          if p.suffix == ".eml" or p.name.startswith("msg_")}  # not the sources' indexes and licenses
# What a mutation writes: never CR, LF or NUL (the DATA reader refuses those with 550, rightly).
_BYTES = b"\xff\xe9\xfc\xc3\x80\"\\;=?*'%()<>:,@ \t"
ROUNDS = 3  # mutated copies of each corpus message


_MIME_FIELD = re.compile(rb"^content-[a-z-]*[ \t]*:([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def _targets(raw: bytes) -> list[int]:
    """Offsets worth mutating: the values of Content-* fields, in every header block (where MIME
    parameters are parsed), and the rest of the top header block."""
    spots = [i for m in _MIME_FIELD.finditer(raw) for i in range(m.start(1), m.end(1))]
    end = raw.find(b"\r\n\r\n")
    top = [i for i in range(end if end > 0 else 0) if raw[i] not in b"\r\n"]
    return spots + top[: len(spots) + 1]


def _mutants(raw: bytes, rng: random.Random) -> list[bytes]:
    """`ROUNDS` copies of `raw` (line ends made CR LF) with a few bytes replaced at `_targets`."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n").replace(b"\0", b"")
    spots = _targets(raw)
    out = []
    for _ in range(ROUNDS):
        data = bytearray(raw)
        for i in rng.sample(spots, min(len(spots), rng.randint(1, 6))):
            data[i] = rng.choice(_BYTES)
        out.append(bytes(data))
    return out


@pytest.mark.parametrize("name", sorted(CORPUS))
async def test_header_mutations_are_delivered(server: Server, name: str) -> None:
    rng = random.Random(name)
    messages = [m for m in _mutants(CORPUS[name], rng) if all(len(line) <= 998 for line in m.split(b"\r\n"))]
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("mx"), start_tls=False, timeout=10,
                             local_hostname="client.remote.example")
    await client.connect()
    try:
        for raw in messages:
            errors, reply = await client.sendmail("a@remote.example", [USER], raw, mail_options=["BODY=8BITMIME"])
            assert errors == {} and reply.startswith("2.0.0"), (raw[:200], reply)
    finally:
        await client.quit()
    stored = await server.pool.fetchval("SELECT count(*) FROM messages")
    assert stored == len(messages)
