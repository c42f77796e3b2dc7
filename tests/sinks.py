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
