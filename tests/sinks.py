"""Scriptable SMTP sinks on loopback for tests: aiosmtpd servers that accept, tempfail, permfail, drop or
stall, per connection and per recipient, and count everything they receive.

    sink = await Sink(rcpt={"bad@far.example": "550 5.1.1 no such user",
                            "later@far.example": "451 4.2.0 try later"},
                      connect=["drop", "accept"]).start()
    ... sink.port, sink.received, sink.connections ...
    await sink.stop()

`connect` is consumed one entry per incoming connection (then `accept` for ever after): "accept", "drop"
(close before the greeting), "stall" (never greet), or a reply such as "421 4.3.2 busy" sent as the
greeting before closing. `rcpt` maps a recipient (lower-cased) to a reply, "drop" or "stall"; `data`
is the reply to the end of DATA (default 250), or "drop"/"stall". Scripts may be changed between runs.
Sinks run in the test's own event loop on an ephemeral port of 127.0.0.1; `tls` enables STARTTLS;
`dsn` advertises DSN (RFC 3461) and keeps the DSN parameters of MAIL and RCPT, as sent, in `dsn_params`
(aiosmtpd itself refuses them).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session


@dataclass
class Received:
    """One message the sink accepted (DATA answered 250)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    rcpt_options: list[list[str]]
    tls: bool
    helo: str | None


class _Refuse(asyncio.Protocol):
    def __init__(self, greeting: str | None) -> None:
        self.greeting = greeting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.greeting:
            transport.write(self.greeting.encode() + b"\r\n")  # type: ignore[attr-defined]
        transport.close()


class _Stall(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sink._transports.add(transport)


@dataclass
class Sink:
    """See the module docstring."""

    rcpt: dict[str, str] = field(default_factory=dict)
    connect: list[str] = field(default_factory=list)
    mail: str | None = None
    data: str | None = None
    smtputf8: bool = True
    tls: ssl.SSLContext | None = None
    auth: tuple[str, str] | None = None
    stall_seconds: float = 3600.0
    hostname: str = "sink.test"
    on_data: Callable[[Received], None] | None = None
    dsn: bool = False

    received: list[Received] = field(default_factory=list)
    connections: int = 0
    rcpt_attempts: list[str] = field(default_factory=list)
    dsn_params: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _transports: set[Any] = field(default_factory=set)

    @property
    def recipients(self) -> list[str]:
        """Every recipient of every accepted message, in order (duplicates show up twice)."""
        return [r for m in self.received for r in m.rcpt_tos]

    async def start(self, host: str = "127.0.0.1") -> Sink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self._transports):
                transport.close()
            await self._server.wait_closed()
            self._server = None

    def _protocol(self) -> asyncio.Protocol:
        self.connections += 1
        action = self.connect.pop(0) if self.connect else "accept"
        if action == "drop":
            return _Refuse(None)
        if action == "stall":
            return _Stall(self)
        if action != "accept":
            return _Refuse(action)
        kwargs: dict[str, Any] = {}
        if self.auth is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=True)
        return _SinkSMTP(self, _Handler(self), hostname=self.hostname, enable_SMTPUTF8=self.smtputf8,
                         tls_context=self.tls, **kwargs)

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = (getattr(auth_data, "login", b"") == self.auth[0].encode()  # type: ignore[index]
              and getattr(auth_data, "password", b"") == self.auth[1].encode())  # type: ignore[index]
        return AuthResult(success=ok, handled=False)


class _SinkSMTP(SMTP):
    def __init__(self, sink: Sink, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sink._transports.add(transport)
        super().connection_made(transport)

    def _without_dsn(self, arg: str, names: tuple[str, ...]) -> str:
        """`arg` without its DSN parameters, which go to the sink's `dsn_params` as they came."""
        if not self.sink.dsn or not arg:
            return arg
        kept = []
        for word in arg.split(" "):
            if word.split("=", 1)[0].upper() in names:
                self.sink.dsn_params.append(word)
            else:
                kept.append(word)
        return " ".join(kept)

    async def smtp_MAIL(self, arg: str) -> None:
        await super().smtp_MAIL(self._without_dsn(arg, ("RET", "ENVID")))

    async def smtp_RCPT(self, arg: str) -> None:
        await super().smtp_RCPT(self._without_dsn(arg, ("NOTIFY", "ORCPT")))


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def _act(self, server: SMTP, reply: str) -> str | None:
        if reply == "drop":
            server.transport.close()
            return "421 4.4.2 closing"
        if reply == "stall":
            await asyncio.sleep(self.sink.stall_seconds)
            return "451 4.4.2 stalled"
        return reply

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-DSN", responses[-1]] if self.sink.dsn else responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if self.sink.mail:
            return await self._act(server, self.sink.mail) or ""
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        self.sink.rcpt_attempts.append(address)
        scripted = self.sink.rcpt.get(address.lower())
        if scripted:
            return await self._act(server, scripted) or ""
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.sink.data:
            reply = await self._act(server, self.sink.data) or ""
            if not reply.startswith("2"):
                return reply
        msg = Received(mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                       data=envelope.original_content or envelope.content or b"",
                       mail_options=list(envelope.mail_options), rcpt_options=list(envelope.rcpt_options),
                       tls=session.ssl is not None, helo=session.host_name)
        self.sink.received.append(msg)
        if self.sink.on_data is not None:
            self.sink.on_data(msg)
        return "250 2.0.0 queued"


# --- a raw, scriptable remote MTA -----------------------------------------------------------------------

Step = bytes | str | Callable[[asyncio.StreamWriter], Any] | None


@dataclass
class RawMTA:
    """A hostile or broken remote MTA on loopback, written on raw asyncio streams (aiosmtpd would refuse
    to say most of this). `replies` maps a verb (GREETING, EHLO, HELO, MAIL, RCPT, DATA, "." for the end
    of the message, QUIT, RSET, STARTTLS) to what is sent back: bytes as they are, "close" (close the
    connection), "stall" (say nothing), or an async callable given the writer. Verbs not scripted get a
    plain well-formed reply. `per_connection` overrides `replies` for the n-th connection (0-based).

    It counts `connections`, keeps every command line in `commands` and every message whose "." it
    answered with a 2xx in `delivered`."""

    replies: dict[str, Step] = field(default_factory=dict)
    per_connection: dict[int, dict[str, Step]] = field(default_factory=dict)
    extensions: list[bytes] = field(default_factory=lambda: [b"PIPELINING", b"8BITMIME", b"SMTPUTF8"])

    connections: int = 0
    commands: list[bytes] = field(default_factory=list)
    delivered: list[bytes] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> RawMTA:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
            self._server = None

    def _default(self, verb: str) -> bytes:
        if verb == "EHLO":
            lines = [b"raw.test", *self.extensions]
            return b"".join(b"250-" + e + b"\r\n" for e in lines[:-1]) + b"250 " + lines[-1] + b"\r\n"
        return {"GREETING": b"220 raw.test ESMTP\r\n", "DATA": b"354 go on\r\n", ".": b"250 2.0.0 queued\r\n",
                "QUIT": b"221 2.0.0 bye\r\n"}.get(verb, b"250 2.0.0 OK\r\n")

    async def _say(self, n: int, verb: str, writer: asyncio.StreamWriter, default: bytes | None = None
                   ) -> bytes | None:
        """Send the scripted reply and return it (b"" from a callable); None when the connection ends."""
        step = {**self.replies, **self.per_connection.get(n, {})}.get(verb, default or self._default(verb))
        if step == "close":
            writer.close()
            return None
        if step == "stall":
            await asyncio.sleep(3600)
            return None
        sent = b""
        if callable(step):
            await step(writer)
        elif step:
            sent = step.encode() if isinstance(step, str) else step
            writer.write(sent)
        await writer.drain()
        return sent

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.connections
        self.connections += 1
        self._writers.add(writer)
        try:
            if await self._say(n, "GREETING", writer) is None:
                return
            accepted = False  # a recipient of the current transaction was accepted
            while line := await reader.readline():
                self.commands.append(line)
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper().decode("ascii", "replace")
                # Unscripted, DATA is refused when no RCPT was accepted (RFC 2920 §3.1).
                refuse = None if accepted else b"554 5.5.1 no valid recipients\r\n"
                sent = await self._say(n, verb, writer, refuse if verb == "DATA" else None)
                if sent is None or verb == "QUIT":
                    return
                if verb in ("MAIL", "RSET", "DATA"):
                    accepted = False
                elif verb == "RCPT" and sent[:1] == b"2":
                    accepted = True
                if verb == "DATA" and sent.startswith(b"354"):
                    data = b""
                    while (chunk := await reader.readline()) != b".\r\n":
                        if not chunk:
                            return  # the client went away in the middle of the message
                        data += chunk
                    sent = await self._say(n, ".", writer)
                    if sent is not None and sent[:1] == b"2":
                        self.delivered.append(data)
                    if sent is None:
                        return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
