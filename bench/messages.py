"""Deterministic, realistic test messages for the benchmark: the same seed gives the same bytes.

Headers are those a mail client writes (Message-ID, Date, User-Agent, Content-Language, threading headers
on replies); small messages are text/plain, larger ones a text and its HTML as multipart/alternative,
inside a multipart/mixed with a base64 attachment as mail clients nest them, so size grows the way real
mail grows. A few words are planted at known rates so
searches have answers: SUBJECT_NEEDLE in 1 subject of 20, BODY_NEEDLE in 1 body of 50.
This module does no I/O.
"""

from __future__ import annotations

import base64
import functools
import random
import re
from datetime import UTC, datetime, timedelta

SUBJECT_NEEDLE = "invoice"
BODY_NEEDLE = "zephyrquill"

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more about can out "
    "other into could time only new some them these then two first may any like now my such make over our "
    "even most me state after also made many did must before back see through way where get much go well "
    "your know should down work year because come people just say each those take day good how long own "
    "meeting project release schedule budget review draft team server deploy patch build update report "
    "customer account order shipment contract proposal agenda minutes summary estimate quarter figures"
).split()
_FIRST = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil Trent Victor Walter".split()
_LAST = "Smith Jones Taylor Brown Wilson Evans Thomas Roberts Walker Wright Thompson White Hughes Edwards Green".split()
_AGENTS = (
    "Mozilla Thunderbird", "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0",
    "Microsoft Outlook 16.0", "Apple Mail (2.3731.700.6)", "Mutt/2.2.9 (2022-11-12)",
)
_SUBJECTS = (
    "Re: {w} {w} for next week", "{W} {w} draft", "Fwd: {W} {w} {w}", "Question about the {w} {w}",
    "{W} update", "Re: Re: {W} {w} {w}", "Notes from the {w} meeting", "{W} {w} v{n}",
)
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


@functools.lru_cache(maxsize=4)
def _corpus(seed: int) -> tuple[str, list[int]]:
    """About 1 MB of wrapped paragraphs (CRLF, lines under 78 characters) and the offsets of its lines."""
    rng = random.Random(seed)
    lines: list[str] = []
    line = ""
    total = 0
    while total < 1_000_000:
        for word in _sentence(rng, rng.randint(6, 16)).split():
            if len(line) + len(word) + 1 > 72:
                lines.append(line)
                total += len(line) + 2
                line = word
            else:
                line = f"{line} {word}" if line else word
        if rng.random() < 0.15:
            lines += [line, ""]
            total += len(line) + 4
            line = ""
    text = "\r\n".join(lines) + "\r\n"
    starts = [m.end() for m in re.finditer("\r\n", text)][:-1]
    return text, [0, *starts]


def _text(rng: random.Random, size: int, needle: bool) -> str:
    """About `size` bytes of prose, whole lines from the seed's corpus; with `needle`, BODY_NEEDLE in it."""
    text, starts = _corpus(rng.randrange(4))
    size = min(size, len(text) // 2)
    i = rng.randrange(len(starts) // 2)
    begin = starts[i]
    end = text.find("\r\n", begin + size) + 2
    chunk = text[begin:end]
    if needle:
        cut = chunk.find("\r\n", len(chunk) // 3) + 2
        chunk = chunk[:cut] + f"Please keep the {BODY_NEEDLE} notes.\r\n" + chunk[cut:]
    return chunk


def _person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}@{rng.choice(['example.org', 'example.net', 'example.com'])}"


def _b64(data: bytes) -> str:
    enc = base64.b64encode(data).decode()
    return "\r\n".join(enc[i:i + 76] for i in range(0, len(enc), 76)) + "\r\n"


def make_message(seed: int, index: int, size: int, to: str, sender: str | None = None) -> bytes:
    """Message number `index` of the series `seed`, about `size` bytes, addressed to `to`."""
    rng = random.Random(seed * 1_000_003 + index)
    name, addr = _person(rng)
    if sender:
        addr = sender
    date = _EPOCH + timedelta(seconds=index * 97 + rng.randint(0, 90))
    fill = {"w": lambda: rng.choice(_WORDS)}
    subject = rng.choice(_SUBJECTS).replace("{n}", str(rng.randint(2, 9)))
    while "{w}" in subject or "{W}" in subject:
        subject = subject.replace("{w}", fill["w"](), 1).replace("{W}", fill["w"]().capitalize(), 1)
    if index % 20 == 0:
        subject += f" ({SUBJECT_NEEDLE} {index})"
    mid = f"<{rng.getrandbits(64):016x}.{index}@{addr.split('@')[1]}>"
    headers = [
        f"Message-ID: {mid}",
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        "MIME-Version: 1.0",
        f"User-Agent: {rng.choice(_AGENTS)}",
        "Content-Language: en-GB",
        f"To: {to}",
    ]
    if rng.random() < 0.3:
        cname, caddr = _person(rng)
        headers.append(f"Cc: {cname} <{caddr}>")
    headers += [f"From: {name} <{addr}>", f"Subject: {subject}"]
    if subject.startswith("Re:"):
        parent = f"<{rng.getrandbits(64):016x}@{addr.split('@')[1]}>"
        headers += [f"In-Reply-To: {parent}", f"References: {parent}"]
    needle = index % 50 == 0
    head_len = sum(len(h) + 2 for h in headers) + 200
    body_size = max(200, size - head_len)

    if size < 8_000:
        headers += ["Content-Type: text/plain; charset=UTF-8; format=flowed", "Content-Transfer-Encoding: 7bit"]
        body = _text(rng, body_size, needle)
    elif size < 60_000:
        boundary = f"------------{rng.getrandbits(96):024x}"
        text = _text(rng, body_size // 3, needle)
        html = "<html><body>\r\n" + "".join(f"<p>{p}</p>\r\n" for p in text.split("\r\n\r\n") if p) + "</body></html>\r\n"
        pad = max(0, body_size - len(text) - len(html) - 400)
        att = _b64(rng.randbytes(pad * 3 // 4)) if pad > 2000 else ""
        # the text and its HTML rendering are alternatives of each other; an attachment makes the whole a
        # multipart/mixed around that multipart/alternative, as Thunderbird, Outlook and Apple Mail nest them
        alternative = (
            f"--{boundary}\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n"
            f"Content-Transfer-Encoding: 7bit\r\n\r\n{text}"
            f"--{boundary}\r\nContent-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{html}"
            f"--{boundary}--\r\n")
        if att:
            outer = f"------------{rng.getrandbits(96):024x}"
            headers.append(f'Content-Type: multipart/mixed; boundary="{outer}"')
            body = ("This is a multi-part message in MIME format.\r\n"
                    f'--{outer}\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                    f"{alternative}"
                    f"--{outer}\r\nContent-Type: image/png; name=\"photo-{index}.png\"\r\n"
                    f"Content-Disposition: attachment; filename=\"photo-{index}.png\"\r\n"
                    f"Content-Transfer-Encoding: base64\r\n\r\n{att}--{outer}--\r\n")
        else:
            headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
            body = "This is a multi-part message in MIME format.\r\n" + alternative
    else:
        boundary = f"------------{rng.getrandbits(96):024x}"
        text = _text(rng, 1500, needle)
        att = _b64(rng.randbytes(max(0, body_size - len(text) - 600) * 3 // 4))
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = ("This is a multi-part message in MIME format.\r\n"
                f"--{boundary}\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n"
                f"Content-Transfer-Encoding: 7bit\r\n\r\n{text}"
                f"--{boundary}\r\nContent-Type: application/pdf; name=\"report-{index}.pdf\"\r\n"
                f"Content-Disposition: attachment; filename=\"report-{index}.pdf\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n{att}--{boundary}--\r\n")
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def mailbox_size(rng: random.Random) -> int:
    """The size of one message in a filled mailbox: mostly short text, some with attachments."""
    r = rng.random()
    if r < 0.88:
        return rng.randint(1_500, 6_000)
    if r < 0.985:
        return rng.randint(10_000, 30_000)
    return rng.randint(60_000, 150_000)
