"""The sans-IO IMAP command parser: bytes in, `Command`s and parser events out.

Owns: framing the client's byte stream into commands: lines, synchronising literals `{n}`
(answered by the I/O layer with a continuation), non-synchronising `{n+}` (RFC 7888), limits on
line and literal size with clean BAD replies that keep the stream in sync, and the two non-command
modes: AUTHENTICATE exchanges (RFC 3501 §6.2.2) and IDLE (RFC 2177).
Must not: do I/O, import asyncio/sockets/storage, or raise on any input.

Use (pymap's "I need a literal" idea):

    parser = CommandParser(max_line=8192, max_literal=64 * 1024)
    for event in parser.feed(data):
        match event:
            case ContinuationNeeded(): send(b"+ Ready\r\n")
            case BadCommand(tag, text, code): send BAD
            case Command(): dispatch
After an `Authenticate` or an IDLE `Simple`, the parser pauses (bytes are buffered, not parsed)
until the session calls `enter_auth()` (next lines are `AuthResponse`s), `enter_idle()` (the next
line is `IdleDone`), or `resume()` (back to commands, e.g. after rejecting the command).
"""

from __future__ import annotations

import re
from enum import Enum

from imap.commands import (
    Authenticate,
    AuthResponse,
    BadCommand,
    ContinuationNeeded,
    Event,
    Hangup,
    IdleDone,
    Simple,
)
from imap.grammar import Options, parse_command, split_tag

_LITERAL_AT_END = re.compile(rb"~?\{(\d+)(\+?)\}\r?\n\Z")
# A refused non-synchronising literal is read and dropped (the session goes on) only up to this many
# times the limit it broke: a client that misjudged the limit keeps its session, but one announcing
# {99999999999+} is not read for hours. RFC 7888 §4: the server may instead reject the command and
# close the connection, which it does then (tagged BAD [TOOBIG], then BYE).
DISCARD_FACTOR = 2


class Mode(Enum):
    COMMAND = "command"
    AUTH = "auth"
    IDLE = "idle"


class CommandParser:
    """Feed bytes, get events. Limits may be changed between feeds by the session."""

    def __init__(
        self,
        *,
        max_line: int = 8192,
        max_literal: int = 64 * 1024,
        max_append_literal: int | None = None,
        max_command: int | None = None,
    ) -> None:
        self.max_line = max_line  # one line, CRLF included
        self.max_literal = max_literal  # any literal outside APPEND
        # APPEND's message literals, e.g. the APPENDLIMIT (RFC 7889); defaults to max_literal
        self.max_append_literal = max_literal if max_append_literal is None else max_append_literal
        # a whole command with all its literals; MULTIAPPEND can otherwise grow without end
        self.max_command = max_command
        self.options = Options()
        self.mode = Mode.COMMAND
        self.paused = False
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already searched for LF
        self._cmd = bytearray()  # the command so far: lines and literal contents
        self._literal = 0  # literal bytes still to copy into _cmd
        self._skip = 0  # literal bytes still to discard
        self._discard = False  # dropping the rest of a rejected command
        self._overlong = False  # dropping an over-long line up to its LF
        self._hung_up = False  # a Hangup was given: nothing more is read

    # -- session controls
    def literal_limit(self, command: str | None) -> int:
        """Largest literal accepted for `command` (upper case). Override to vary by state."""
        return self.max_append_literal if command == "APPEND" else self.max_literal

    def enter_auth(self) -> list[Event]:
        """The next line is an AUTHENTICATE response (`AuthResponse`)."""
        self.mode, self.paused = Mode.AUTH, False
        return self._process()

    def enter_idle(self) -> list[Event]:
        """IDLE accepted: the next line ends it (`IdleDone`)."""
        self.mode, self.paused = Mode.IDLE, False
        return self._process()

    def resume(self) -> list[Event]:
        """Back to parsing commands."""
        self.mode, self.paused = Mode.COMMAND, False
        return self._process()

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events (for back-pressure)."""
        return len(self._buf) + len(self._cmd)

    def feed(self, data: bytes) -> list[Event]:
        """Add received bytes; return the events they complete."""
        self._buf += data
        return self._process()

    # -- framing
    def _bad(self, text: str, code: str | None = None, line: bytes = b"") -> BadCommand:
        tag, _, _ = split_tag(bytes(self._cmd[:200]) if self._cmd else (line or bytes(self._buf))[:200])
        return BadCommand(tag or "*", text, code)

    def _process(self) -> list[Event]:
        events: list[Event] = []
        buf = self._buf
        if self._hung_up:
            buf.clear()
            return events
        while not self.paused and not self._hung_up:
            if self._skip:
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                if self._skip:
                    break
                continue
            if self._literal:
                n = min(self._literal, len(buf))
                self._cmd += buf[:n]
                del buf[:n]
                self._literal -= n
                if self._literal:
                    break
                continue
            nl = buf.find(b"\n", self._scanned)
            if nl < 0:
                if len(buf) > self.max_line and not self._overlong:
                    if not self._discard:
                        events.append(self._too_long())
                    self._cmd.clear()
                    self._overlong = True
                    self._discard = False
                if self._overlong:
                    del buf[:]
                self._scanned = len(buf)
                break
            line = bytes(buf[: nl + 1])
            del buf[: nl + 1]
            self._scanned = 0
            if self._overlong:
                self._overlong = False
                events.extend(self._end_of_dropped_line(line))
                continue
            if len(line) > self.max_line:
                if not self._discard:
                    events.append(self._too_long(line))
                self._cmd.clear()
                self._discard = False
                events.extend(self._end_of_dropped_line(line))
                continue
            if self.mode is Mode.IDLE:
                self.mode = Mode.COMMAND
                events.append(IdleDone(line.strip().upper() == b"DONE"))
                continue
            if self.mode is Mode.AUTH:
                self.paused = True  # the session answers before the next line
                events.append(AuthResponse(line.rstrip(b"\r\n")))
                continue
            m = _LITERAL_AT_END.search(line)
            if self._discard:
                events.extend(self._end_of_dropped_line(line))
                continue
            if not self._cmd and not line.strip():
                continue  # blank lines between commands are ignored
            self._cmd += line
            if m is not None:
                events.extend(self._literal_start(m))
                continue
            self._complete(events)
        return events

    def _too_long(self, line: bytes = b"") -> Event:
        """An over-long line: BAD, or, in IDLE, the end of IDLE like any line that is not DONE, and in an
        AUTHENTICATE exchange an empty (malformed) response, so the exchange ends with its tagged reply
        (else the client got an untagged BAD and went on waiting for one)."""
        if self.mode is Mode.IDLE:
            self.mode = Mode.COMMAND
            return IdleDone(False)
        if self.mode is Mode.AUTH:
            self.paused = True  # the session answers before the next line, as for any response
            return AuthResponse(b"")
        return self._bad("line too long", line=line)

    def _end_of_dropped_line(self, line: bytes) -> list[Event]:
        """A dropped line ended: a `{n+}` literal after it is skipped too (RFC 7888 §4), or, when it is
        too large to read, the connection is closed."""
        m = _LITERAL_AT_END.search(line)
        if m is not None and m.group(2):
            size = _size(m.group(1))
            _, name, _ = split_tag(line[:200])
            return self._skip_literal(size, self.literal_limit(name))
        self._discard = False  # a synchronising literal is never sent without "+"
        return []

    def _skip_literal(self, size: int, limit: int) -> list[Event]:
        """Drop a refused non-synchronising literal of `size` octets (and the rest of its command), or
        hang up when it is more than DISCARD_FACTOR times `limit`."""
        if size > DISCARD_FACTOR * limit:
            self._hung_up = True
            self._buf.clear()
            self._cmd.clear()
            return [Hangup("literal too large; closing the connection")]
        self._skip = size
        self._discard = True
        return []

    def _literal_start(self, m: re.Match[bytes]) -> list[Event]:
        digits, plus = m.group(1), bool(m.group(2))
        size = _size(digits)
        _, name, _ = split_tag(bytes(self._cmd[:200]))
        limit = self.literal_limit(name)
        too_big = size > limit
        if self.max_command is not None and len(self._cmd) + size > self.max_command:
            too_big = True
        if too_big:
            bad = self._bad(f"literal too large (limit {limit} octets)", "TOOBIG")
            self._cmd.clear()
            return [bad, *self._skip_literal(size, limit)] if plus else [bad]
        self._literal = size
        return [] if plus else [ContinuationNeeded(size)]

    def _complete(self, events: list[Event]) -> None:
        data = bytes(self._cmd)
        self._cmd.clear()
        event = parse_command(data, self.options)
        events.append(event)
        if isinstance(event, Authenticate) or (isinstance(event, Simple) and event.name == "IDLE"):
            self.paused = True


def _size(digits: bytes) -> int:
    """A literal's announced size; more than 19 digits is more than any limit."""
    return int(digits) if len(digits) < 20 else 2**63
