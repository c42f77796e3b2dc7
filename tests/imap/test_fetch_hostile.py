"""Hostile messages end to end: APPENDed over a real listener with imapclient, then fetched with it.
Each is stored whole (no NO [SERVERBUG]), served byte for byte, and its ENVELOPE and BODYSTRUCTURE
parse as the RFC 3501 §9 grammar says."""

from __future__ import annotations

import asyncio
import re

import imapclient
import pytest

from tests.imap.conftest import PASSWORD, USER, Listening


def appended_and_fetched(listening: Listening, raw: bytes) -> dict[bytes, object]:
    """APPEND `raw` to INBOX and FETCH it back (blocking: run in a thread)."""
    with imapclient.IMAPClient("127.0.0.1", port=listening.imap_port, ssl=False) as c:
        c.login(USER, PASSWORD)
        reply = c.append("INBOX", raw)
        uid = int(re.search(rb"APPENDUID \d+ (\d+)", reply).group(1))  # type: ignore[union-attr]
        c.select_folder("INBOX", readonly=True)
        return c.fetch([uid], ["RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY", "BODY.PEEK[]"])[uid]


ENCODED_MESSAGE = (b"Subject: fwd\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n"
                   b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   b"U3ViamVjdDogeA0KDQp4\r\n--X--\r\n")


@pytest.mark.parametrize("raw, part_type, part_params", [
    # an RFC 2231 index too long for int(): summarize raised, APPEND said NO [SERVERBUG]
    (b"Subject: s\r\nContent-Type: text/plain; t*" + b"9" * 5000 + b"=a\r\n\r\nx\r\n",
     (b"text", b"plain"), (b"charset", b"us-ascii", b"t*" + b"9" * 5000, b"a")),
    # decoded filename and charset with a NUL (PostgreSQL jsonb refused the part list)
    (b"Subject: s\r\nContent-Type: text/plain; charset*=utf-8''a%00b; name==?utf-8?Q?a=00b?=\r\n\r\nx\r\n",
     (b"text", b"plain"), (b"charset*", b"utf-8''a%00b", b"name", b"=?utf-8?Q?a=00b?=")),
    # a subject decoding to a lone surrogate (asyncpg could not encode it)
    (b"Subject: =?utf-7?Q?+2AA-?=\r\nContent-Type: application/x; name==?utf-7?Q?+2AA-?=\r\n\r\nx\r\n",
     (b"application", b"x"), (b"name", b"=?utf-7?Q?+2AA-?=")),
    # an encoded word in a codec raising UnicodeError (not UnicodeDecodeError): summarize raised
    (b"Subject: =?idna?B?eG4tLQ==?=\r\n\r\nx\r\n", (b"text", b"plain"), (b"charset", b"us-ascii")),
])
async def test_hostile_header_values_are_stored_and_served(listening: Listening, raw: bytes,
                                                           part_type: tuple[bytes, bytes],
                                                           part_params: tuple[bytes, ...]) -> None:
    got = await asyncio.to_thread(appended_and_fetched, listening, raw)
    assert got[b"RFC822.SIZE"] == len(raw) and got[b"BODY[]"] == raw
    structure = got[b"BODYSTRUCTURE"]
    assert tuple(structure[:2]) == part_type and tuple(structure[2]) == part_params  # type: ignore[index]


async def test_encoded_message_part_is_served_as_an_opaque_attachment(listening: Listening) -> None:
    # "message" "rfc822" without envelope, body and line count is not RFC 3501 §9 body-type-msg
    got = await asyncio.to_thread(appended_and_fetched, listening, ENCODED_MESSAGE)
    for item in (b"BODYSTRUCTURE", b"BODY"):
        part = got[item][0][0]  # type: ignore[index]
        assert tuple(part[:7]) == (b"application", b"octet-stream", None, None, None, b"base64", 20), item
    assert got[b"ENVELOPE"].subject == b"fwd"  # type: ignore[attr-defined]
