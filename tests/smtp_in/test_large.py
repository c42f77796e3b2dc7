"""A 25 MB message through the MX (spooled to disk on the way) is stored byte-identical apart from the
trace headers we add; and the same size as BDAT chunks."""

from __future__ import annotations

import base64
import random

import aiosmtplib
import pytest

from tests.smtp_in.harness import USER, RawClient, Server
from tests.smtp_in.test_mx import inbox

SIZE = 25 * 1024 * 1024


def big_message() -> bytes:
    rng = random.Random(25)
    head = (b"From: big@remote.example\r\nTo: user@local.example\r\nSubject: 25 MB\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
    encoded = base64.encodebytes(rng.randbytes(SIZE * 3 // 4)).replace(b"\n", b"\r\n")
    # Lines starting with a dot (stuffed on the wire, unstuffed on arrival) and an 8-bit tail.
    return head + b".leading dot\r\n..two dots\r\n" + encoded + ".\u00e9t\u00e9\r\n".encode()


def only_trace_added(stored: bytes, original: bytes) -> bool:
    prefix = stored[: len(stored) - len(original)]
    return stored.endswith(original) and prefix.startswith(b"Return-Path: ") and prefix.count(b"\r\nReceived: ") == 1


async def test_25_mb_over_data(server: Server) -> None:
    original = big_message()
    assert len(original) > SIZE
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("mx"), start_tls=False, timeout=60)
    await client.connect()
    errors, _ = await client.sendmail("big@remote.example", [USER], original)  # the 60 s timeout guards a hang
    await client.quit()
    assert errors == {}
    (stored,) = await inbox(server.pool, USER)
    assert only_trace_added(stored, original)


async def test_25_mb_over_bdat(server: Server) -> None:
    original = big_message()
    client = await RawClient.connect(server.port("mx"))
    await client.cmd("EHLO big.example")
    await client.cmd("MAIL FROM:<big@remote.example>")
    await client.cmd(f"RCPT TO:<{USER}>")
    step = 4 * 1024 * 1024 + 17  # chunk boundaries anywhere, also inside CRLF
    for pos in range(0, len(original), step):
        part = original[pos:pos + step]
        last = " LAST" if pos + step >= len(original) else ""
        await client.send(f"BDAT {len(part)}{last}\r\n".encode() + part)
        code, text = await client.reply(30)
        assert code == 250, text
    (stored,) = await inbox(server.pool, USER)
    assert only_trace_added(stored, original)


@pytest.mark.parametrize(("fields", "accepted"), [
    (40_000, True),    # 0.96 MB of header: accepted, stored whole
    (50_000, False),   # 1.2 MB: 552 5.3.4, nothing stored
])
async def test_a_header_block_over_one_megabyte_is_refused(server: Server, fields: int, accepted: bool) -> None:
    """Nothing bounded the header block: 100,000 fields were summarised, checked and served to every IMAP
    client. Beyond 1 MB (Exim's header_maxsize) the message is refused after DATA, as one over SIZE is."""
    head = b"".join(b"X-Filler-%06d: value\r\n" % i for i in range(fields))
    original = head + b"From: a@remote.example\r\nSubject: big header\r\n\r\nbody\r\n"
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port("mx"), start_tls=False, timeout=60)
    await client.connect()
    if accepted:
        errors, _ = await client.sendmail("a@remote.example", [USER], original)
        assert errors == {}
        (stored,) = await inbox(server.pool, USER)
        assert only_trace_added(stored, original)
    else:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.sendmail("a@remote.example", [USER], original)
        assert refused.value.code == 552 and refused.value.message.startswith("5.3.4 message header")
        assert await inbox(server.pool, USER) == []
    await client.quit()
