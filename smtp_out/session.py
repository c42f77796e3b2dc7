"""An open outbound SMTP session, taken over from aiosmtplib once it is set up, for pipelined transactions.

aiosmtplib greets, EHLOs, negotiates STARTTLS and AUTH (see `client._session`); then the transport is
handed to a plain `asyncio.StreamReader`, because aiosmtplib reads exactly one reply per command written
and drops replies that arrive early, so it cannot pipeline. With the server's PIPELINING (RFC 2920)
the client sends MAIL, every RCPT and DATA in one write and reads the replies in order: one round trip
where there were 2 + recipients, and on a busy event loop each round trip costs a socket write, a wake-up
and a read (py-spy: most of a delivery's CPU).

It knows replies and bytes on the wire only: what a reply means for a recipient is `client`'s business.
"""

from __future__ import annotations

import asyncio
import re

from mailcore.lineends import normalize_crlf

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; servers exceed it, so allow generously.
MAX_REPLY_LINE = 8192
MAX_REPLY_LINES = 100


class SessionLost(Exception):
    """The session cannot go on (closed by the server, timed out, or a malformed reply); it is closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """One reply line as (code, more lines follow, text). RFC 5321 §4.2: three digits, then '-' on every
    line but the last, which has ' ' or, with no text, nothing. ValueError for anything else."""
    if len(line) < 3 or not line[:3].isdigit() or line[:1] not in b"2345" or line[3:4] not in (b"", b" ", b"-", b"\r", b"\n"):
        raise ValueError(f"malformed reply line {line[:40]!r}")
    return int(line[:3]), line[3:4] == b"-", line[4:].strip(b" \t\r\n").decode("utf-8", "replace")


def command(*parts: bytes) -> bytes:
    """A command line. Control characters in what goes into it (an address, a parameter) would let a
    value end the line and inject another command: refused, as aiosmtplib did."""
    for part in parts:
        if _CONTROL.search(part):
            raise ValueError("command argument contains a control character")
    return b" ".join(parts) + b"\r\n"


def dot_stuffed(message: bytes) -> bytes:
    """The message as sent after DATA (RFC 5321 §4.5.2): a leading '.' doubled, ending with CRLF, then
    the terminating '.' line.

    Line endings are `normalize_crlf`'s, the rule the DKIM signer applied to these bytes, so what is
    sent is what was signed; it also means no bare CR or LF near a '.' can end DATA early at a lenient
    server (SMTP smuggling). It runs on the event loop, so a CRLF-only message with no line starting
    with '.' is only scanned, and copied once to append the end."""
    body = normalize_crlf(message)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    if body.startswith(b"."):
        body = b"." + body
    # After normalize_crlf every line but the first starts right after a CRLF.
    return body.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class Session:
    """Commands out, replies in, over a transport set up by aiosmtplib. `extensions` is what EHLO
    offered (lower-case keywords)."""

    def __init__(self, transport: asyncio.Transport, extensions: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        self.extensions = extensions
        self.transport = transport
        self._reader = asyncio.StreamReader(limit=MAX_REPLY_LINE, loop=loop)
        protocol = asyncio.StreamReaderProtocol(self._reader, loop=loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        self._writer = asyncio.StreamWriter(transport, protocol, self._reader, loop)

    def supports(self, extension: str) -> bool:
        """Whether EHLO offered `extension`."""
        return extension.lower() in self.extensions

    @property
    def pipelining(self) -> bool:
        """RFC 2920: commands may be sent without waiting for each reply."""
        return self.supports("pipelining")

    @property
    def is_connected(self) -> bool:
        """Open as far as we know: not closed by us, no end of stream seen from the server."""
        return not self.transport.is_closing() and not self._reader.at_eof()

    def write(self, data: bytes) -> None:
        """Queue bytes for the server; SessionLost if the session is already closed."""
        if self.transport.is_closing():
            raise SessionLost("connection closed")
        self._writer.write(data)

    async def drain(self, seconds: float) -> None:
        """Wait until the transport's buffer is low again (a large message on a slow link)."""
        try:
            async with asyncio.timeout(seconds):
                await self._writer.drain()
        except (TimeoutError, OSError) as exc:
            self.close()
            raise SessionLost("timeout" if isinstance(exc, TimeoutError) else "connection lost") from exc

    async def reply(self, seconds: float) -> tuple[int, str]:
        """The next reply, its lines' text joined by newlines. SessionLost (and the session closed) when
        none comes within `seconds` or the stream ends or makes no sense: it cannot be resynchronised."""
        lines: list[str] = []
        try:
            async with asyncio.timeout(seconds):
                while True:
                    code, more, text = parse_reply_line(await self._reader.readuntil(b"\n"))
                    lines.append(text)
                    if not more:
                        return code, "\n".join(lines)
                    if len(lines) >= MAX_REPLY_LINES:
                        raise ValueError("reply too long")
        except TimeoutError as exc:
            self.close()
            raise SessionLost("timeout") from exc
        except (asyncio.IncompleteReadError, OSError) as exc:
            self.close()
            raise SessionLost("connection lost") from exc
        except (asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise SessionLost("malformed reply") from exc

    async def quit(self, seconds: float) -> None:
        """QUIT politely, then close whatever the answer (RFC 5321 §4.1.1.10)."""
        try:
            self.write(b"QUIT\r\n")
            await self.reply(seconds)
        except SessionLost:
            pass
        self.close()

    def close(self) -> None:
        """Close at once (no QUIT): after an error, or at shutdown of a session that may stall."""
        self.transport.close()
