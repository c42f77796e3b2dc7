"""The messages the full-text index tests search (test_bodyindex, test_textbatch), one per way text is
written in mail (plain, quoted-printable, base64, Latin-1, multipart, NUL, …), and how they are delivered."""

from __future__ import annotations

import base64

import asyncpg

from mailcore.mime.precompute import summarize
from storage.delivery import Delivery, LocalRecipient

B64_TEXT = base64.encodebytes("Grüße aus Köln, the zephyrquill is here".encode()).replace(b"\n", b"\r\n")
CORPUS = [
    b"Subject: plain\r\n\r\nPlease keep the zephyrquill notes.\r\nSecond line, 100% sure_thing.\r\n",
    b"Subject: qp\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    b"\r\nCaf=C3=A9 ZEPHYR=\r\nQUILL soft break, Stra=C3=9Fe\r\n",
    b"Subject: b64\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + B64_TEXT,
    b"Subject: latin1\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9 au lait\r\n",
    b"Subject: attached\r\nContent-Type: multipart/mixed; boundary=XY\r\n\r\n--XY\r\nContent-Type: text/plain\r\n\r\n"
    b"see the file\r\n--XY\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"iVBORw0KGgoAAAANSUhEUgAAWmVwaHlycXVpbGw=\r\n--XY--\r\n",
    b"Subject: alternative\r\nContent-Type: multipart/alternative; boundary=AB\r\n\r\n--AB\r\n"
    b"Content-Type: text/plain\r\n\r\nthe quarterly figures\r\n--AB\r\nContent-Type: text/html\r\n\r\n"
    b"<p>the <b>quarterly</b> figures</p>\r\n--AB--\r\n",
    b"Subject: long word\r\n\r\nprefix" + b"x" * 100 + b"zephyrquillsuffix and more\r\n",
    b"Subject: empty\r\n\r\n",
    b"Subject: nul\r\n\r\nbefore\x00after, a_b c\r\n",
]

async def deliver(pool: asyncpg.Pool, account: int, raw: bytes) -> None:
    d = Delivery(sender="b@example.org")
    d.add_local(LocalRecipient(account, "u@example.test", "INBOX"))
    await d.commit(pool, raw, summarize(raw))
