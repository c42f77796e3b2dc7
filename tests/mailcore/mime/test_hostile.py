"""summarize() on hostile messages: never raises, renders wire text every IMAP parser can read, and
takes time linear in what it is given (no time is asserted: a quadratic case would not end within
the suite's timeout)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re

import pytest

from mailcore.mime import summarize
from mailcore.mime.addresses import parse_addresses
from mailcore.mime.structure import MAX_DEPTH


def test_rfc2231_index_longer_than_int_reads_is_an_ordinary_parameter() -> None:
    # int() refuses over 4,300 digits: the ValueError made summarize raise, so the message was refused
    # with 451 at every retry (and APPEND failed)
    name = "title*" + "9" * 5000
    s = summarize(b"Content-Type: text/plain; " + name.encode() + b"=a; title*0=b\r\n\r\nx")
    assert s.bodystructure.startswith(f'("text" "plain" ("charset" "us-ascii" {{5006}}\r\n{name} "a" "title" "b") NIL')


def test_rfc2231_indexes_out_of_order_and_with_gaps_are_merged_in_order() -> None:
    s = summarize(b"Content-Type: application/x; name*2=c; name*99999999=d; name*0=a\r\n\r\nx")
    assert s.bodystructure.startswith('("application" "x" ("name" "acd") NIL')


def _message_in_message(depth: int) -> bytes:
    raw = b"Subject: innermost\r\n\r\ntext\r\n"
    for i in range(depth):
        raw = b"Subject: s%d\r\nContent-Type: message/rfc822\r\n\r\n" % i + raw
    return raw


ENCODED = (b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\nContent-Type: message/rfc822\r\n"
           b"Content-Transfer-Encoding: %s\r\n\r\nU3ViamVjdDogeA0KDQp4\r\n--X--\r\n")


# RFC 3501 §9 body-type-msg: "message" "rfc822" is followed by body-fields, then an envelope
_MESSAGE_HEAD = re.compile(r'"message" "(?:rfc822|global)" NIL NIL NIL "[^"]*" \d+ (.)')


@pytest.mark.parametrize("raw, opaque", [
    (ENCODED % b"base64", '("application" "octet-stream" NIL NIL NIL "base64" 20'),
    (ENCODED % b"quoted-printable", '("application" "octet-stream" NIL NIL NIL "quoted-printable" 20'),
    (ENCODED.replace(b"message/rfc822", b"message/global") % b"base64",
     '("application" "octet-stream" NIL NIL NIL "base64" 20'),
    # nested past MAX_DEPTH: the deepest message opened holds one message/rfc822 left closed
    (_message_in_message(MAX_DEPTH + 3), '("application" "octet-stream" NIL NIL NIL "7bit" '),
])
def test_message_part_not_opened_is_sent_as_opaque_bytes(raw: bytes, opaque: str) -> None:
    # a "message" "rfc822" part without its envelope, body and line count made a client's parser read
    # the MD5 (NIL) as the envelope and the rest out of step: the whole FETCH response was unreadable
    s = summarize(raw)
    for wire in (s.bodystructure, s.body):
        assert wire.count(opaque) == 1
        assert all(m.group(1) == "(" for m in _MESSAGE_HEAD.finditer(wire))
    # the part list keeps the real type (the API shows it as an attached message)
    assert any(p.content_type.startswith("message/") and p.message_body_start is None for p in s.parts)
    assert s.has_attachments


# Address fields whose old parse asked the whole address read so far about every token: quadratic
# (100 KB of "<@a," took a minute at delivery, 1 MB would take hours, in the delivery's thread)
@pytest.mark.parametrize("unit", [b"<@a,", b"<:", b"<@a:", b"<a>:", b"<<:", b"<@;"])
def test_address_field_of_repeated_route_and_angle_tokens_is_parsed(unit: bytes) -> None:
    value = unit * (1_000_000 // len(unit))
    s = summarize(b"To: " + value + b"\r\nSubject: big\r\n\r\nx")
    assert s.subject == "big"
    assert s.envelope.startswith('(NIL "big" ')


def test_route_then_mailbox_after_the_incremental_state() -> None:
    # what the parse keeps per address (a "<" seen; inside "<@a,@b:" before its ':') resets per address
    got = [(a.name, a.adl, a.mailbox, a.host) for a in parse_addresses(
        "<@a,@b:u@h>, Group: x@y, <@c:v@w>;, <z@q")]
    assert got == [
        (None, "@a,@b", "u", "h"),
        (None, None, "Group", None),
        (None, None, "x", "y"),
        (None, "@c", "v", "w"),
        (None, None, None, None),
        (None, None, "z", "q"),
    ]


# A NUL or a lone surrogate in decoded text: PostgreSQL refused the message (jsonb refuses \u0000 in the
# part list, text refuses NUL, and asyncpg cannot encode a lone surrogate), so SMTP answered 451 at every
# retry and APPEND NO [SERVERBUG]
@pytest.mark.parametrize("header, field, expected", [
    (b"Content-Type: application/x; name==?utf-8?Q?a=00b.txt?=", "filename", "ab.txt"),
    (b"Content-Disposition: attachment; filename*=utf-8''a%00b.txt", "filename", "ab.txt"),
    (b"Content-Disposition: attachment; filename=\"a\x00b.txt\"", "filename", "ab.txt"),
    (b"Content-Disposition: at\x00tachment", "disposition", "attachment"),
    (b"Content-Type: text/plain; charset*=utf-8''a%00b", "charset", "ab"),
    (b"Content-Type: application/x; name==?utf-16-le?B?ANg=?=", "filename", "\xd8"),  # cp1252 fallback
    (b"Content-Type: application/x; name==?utf-7?Q?+2AA-?=.txt", "filename", "\ufffd.txt"),
    (b"Subject: =?utf-7?Q?+2AA-?= and =?utf-8?Q?a=00b?=", "subject", "\ufffd and ab"),
    (b"From: =?utf-7?Q?+2AA-?= <a@b.example>", "from_name", "\ufffd"),
])
def test_decoded_text_holds_no_nul_and_no_lone_surrogate(header: bytes, field: str, expected: str) -> None:
    s = summarize(header + b"\r\n\r\nx")
    got = getattr(s.parts[0], field) if hasattr(s.parts[0], field) else getattr(s, field)
    assert got == expected
    json.dumps(dataclasses.asdict(s.parts[0]), ensure_ascii=False).encode("utf-8")  # what the store is sent


# Charset labels naming codecs that raise UnicodeError, not UnicodeDecodeError, on bad input: summarize
# raised, so the message was refused with 451 at every retry
@pytest.mark.parametrize("charset, data", [("idna", b"xn--"), ("punycode", b"\\x"), ("undefined", b"a")])
def test_encoded_word_in_a_codec_that_raises_unicode_error_reads_as_unlabelled_bytes(charset: str,
                                                                                      data: bytes) -> None:
    b64 = base64.b64encode(data)
    name = charset.encode()
    s = summarize(b"Subject: =?" + name + b"?B?" + b64 + b"?=\r\nContent-Disposition: attachment; filename*="
                  + name + b"''" + data.replace(b"\\", b"%5C") + b"\r\n\r\nx")
    assert s.subject == data.decode() and s.parts[0].filename == data.decode()
