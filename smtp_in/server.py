"""The SMTP listeners as services: MX (25), submission (587, STARTTLS) and submissions (465, implicit TLS).

`SMTPService` implements the server's `Service` protocol (name, start, stop(grace)) for one listener,
built from explicit arguments (settings, pool, TLS context); it never imports the composition root.
`build_smtp_services` makes the configured listeners, sharing one connection counter between them and
the process's rate limits (`mailcore.limits`: AUTH failures with IMAP and the API, connection rate,
messages per hour) and metrics through `smtp_in.hooks`; the MX alone gets the sender authentication
(`smtp_in.senderauth`) and the body checks. Port 0 binds an ephemeral port; `port` tells which one was bound.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import asyncpg

from config.settings import ListenerSettings, Settings
from mailcore import replies
from mailcore.connections import ConnectionSlots
from mailcore.dns import DNSLookup
from mailcore.limits import AuthGuard, Limits, build_limits
from mailcore.metrics import Metrics
from mailcore.proxygate import ClientAddress, ProxyGate, TrustedPeers
from smtp_in.auth import Authenticator
from smtp_in.checks import BodyCheck
from smtp_in.hooks import ListenerHooks
from smtp_in.senderauth import SenderAuthentication
from smtp_in.session import ListenerContext, SMTPSession
from storage.routecache import RouteCache

log = logging.getLogger("smtp_in")

KINDS = ("mx", "submission", "submissions")


class SMTPService:
    """One SMTP listener. Construct, `await start()`, read `port`, `await stop(grace)`."""

    def __init__(self, name: str, settings: Settings, pool: asyncpg.Pool, tls: ssl.SSLContext | None, *,
                 limits: ConnectionSlots | None = None, handshakes: ConnectionSlots | None = None,
                 shared: Limits | None = None,
                 metrics: Metrics | None = None, body_checks: list[BodyCheck] | None = None,
                 sender_auth: SenderAuthentication | None = None, routes: RouteCache | None = None,
                 resolver: DNSLookup | None = None) -> None:
        if name not in KINDS:
            raise ValueError(f"unknown SMTP listener {name!r}")
        self.name = f"smtp-{name}"
        self.kind = name
        smtp = settings.smtp
        self.listener: ListenerSettings = getattr(smtp, name)
        implicit = name == "submissions"
        if implicit and tls is None:
            raise ValueError("smtp.submissions needs a TLS certificate ([tls])")
        if sender_auth is not None and name != "mx":
            raise ValueError("sender authentication (SPF/DKIM/DMARC verdicts) is for the MX listener only")
        checks: list[BodyCheck] = ([sender_auth] if sender_auth else []) + list(body_checks or [])
        self._tls_for_socket = tls if implicit else None
        spool_dir = Path(settings.server.data_dir) / "spool"
        metrics = metrics if metrics is not None else Metrics()
        shared = shared if shared is not None else build_limits(settings, metrics)
        self.context = ListenerContext(
            name=name, submission=name != "mx", implicit_tls=implicit, hostname=settings.server.hostname,
            postmaster=settings.server.postmaster, settings=smtp, pool=pool,
            starttls_context=None if implicit else tls,
            limits=limits or ConnectionSlots(smtp.max_connections, smtp.max_connections_per_ip),
            authenticator=Authenticator(pool, AuthGuard(shared, metrics), smtp.auth_failure_delay),
            spool_dir=spool_dir, body_checks=checks, sender_auth=sender_auth, routes=routes, resolver=resolver,
            hooks=ListenerHooks(name, shared, metrics),
        )
        self.trusted = TrustedPeers(settings.server.proxy_protocol_from)
        self.proxy_timeout = settings.server.proxy_protocol_timeout
        self.handshake_timeout = settings.server.tls_handshake_timeout
        self.handshakes = handshakes or ConnectionSlots(smtp.max_connections, smtp.max_connections_per_ip)
        sessions = self.context.sessions
        self.context.hooks.watch(lambda: len(sessions))
        self._server: asyncio.Server | None = None
        self.port: int | None = None
        self.address = self.listener.address
        # Worker processes (server.workers) bind the same port beside this one; see mailserver.workers.
        self.reuse_port = settings.server.processes > 1

    async def start(self) -> None:
        """Bind and start accepting; return once listening."""
        spool_dir = self.context.spool_dir
        if spool_dir is not None:
            try:
                spool_dir.mkdir(parents=True, exist_ok=True)
            except OSError:  # not fatal: spool files go to the system temporary directory instead
                log.warning("smtp spool directory unusable", extra={"path": str(spool_dir)})
                self.context.spool_dir = None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._gate, self.listener.address, self.listener.port, reuse_address=True,
            reuse_port=self.reuse_port or None, start_serving=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("smtp listener started", extra={"listener": self.kind, "address": self.listener.address,
                                                 "port": self.port, "tls": "implicit" if self._tls_for_socket
                                                 else ("starttls" if self.context.starttls_context else "none")})

    def bound_ports(self) -> dict[str, int]:
        """The port this listener is bound to, by settings path ("smtp.mx"), for worker processes to share."""
        return {} if self.port is None else {f"smtp.{self.kind}": self.port}

    def _gate(self) -> ProxyGate:
        """Every connection passes the PROXY gate first (which also does implicit TLS, after the header)."""
        refusal = "".join(line + "\r\n" for line in replies.PROXY_REFUSED.lines()).encode()
        return ProxyGate(self._session, self.trusted, tls=self._tls_for_socket, refusal=refusal,
                         timeout=self.proxy_timeout, listener=self.name, handshakes=self.handshakes,
                         handshake_timeout=self.handshake_timeout)

    def _session(self, client: ClientAddress) -> SMTPSession:
        return SMTPSession(self.context, client)

    async def stop(self, grace: float) -> None:
        """Stop accepting; idle sessions get 421, busy ones may finish within `grace`, then are cut."""
        self.context.closing = True
        if self._server is not None:
            self._server.close()
        for session in list(self.context.sessions):
            session.shutdown()
        if self.context.sessions:
            try:
                await asyncio.wait_for(self.context.drained.wait(), timeout=grace)
            except TimeoutError:
                log.warning("smtp sessions cut at shutdown", extra={"listener": self.kind,
                                                                     "sessions": len(self.context.sessions)})
        for session in list(self.context.sessions):
            if session.transport is not None:
                session.transport.abort()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)
            except TimeoutError:
                pass
        log.info("smtp listener stopped", extra={"listener": self.kind})


def build_smtp_services(settings: Settings, pool: asyncpg.Pool, tls: ssl.SSLContext | None,
                        body_checks: list[BodyCheck] | None = None,
                        sender_auth: SenderAuthentication | None = None, *, limits: Limits | None = None,
                        metrics: Metrics | None = None, routes: RouteCache | None = None,
                        resolver: DNSLookup | None = None) -> list[SMTPService]:
    """The enabled SMTP listeners, sharing one connection counter, the process's `limits` and
    `metrics` (without them, in-process limits from `settings` and a private registry) and its routing
    cache `routes` (without it, every RCPT asks the store). `sender_auth` and `body_checks` apply to the
    MX only; `resolver` names clients in Received fields (without it, their addresses only)."""
    smtp = settings.smtp
    connections = ConnectionSlots(smtp.max_connections, smtp.max_connections_per_ip)
    metrics = metrics if metrics is not None else Metrics()
    shared = limits if limits is not None else build_limits(settings, metrics)
    services = []
    for kind in KINDS:
        if not getattr(smtp, kind).enabled:
            continue
        if kind == "submissions" and tls is None:
            log.warning("smtp submissions listener disabled: no TLS certificate configured")
            continue
        services.append(SMTPService(kind, settings, pool, tls, limits=connections, shared=shared, metrics=metrics,
                                    body_checks=body_checks if kind == "mx" else None,
                                    sender_auth=sender_auth if kind == "mx" else None, routes=routes,
                                    resolver=resolver))
    return services
