"""The composition root: build every part from the settings and run them until SIGTERM or SIGINT.

Owns the process lifecycle: open the store (starting the embedded PostgreSQL if configured so), apply
migrations, seed the --dev demo, start the listeners and workers, then on a signal stop accepting, let
in-flight work finish within the grace period, and close the store. Protocol code never imports this.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from config.settings import Settings
from mailcore.dns.resolver import Resolver
from mailcore.limits import AuthGuard, Limits, build_limits
from mailcore.metrics import Metrics
from mailcore.passwords import configure_cache, hash_password
from mailcore.tls import TLSConfigError, certificate_paths, server_context
from storage import accounts
from storage.db import Database

if TYPE_CHECKING:
    from smtp_in.senderauth import SenderAuthentication

log = logging.getLogger("mailserver")

DEMO_DOMAIN = "example.test"
DEMO_USER = "demo@example.test"
DEMO_PASSWORD = "demo-password"


class Service(Protocol):
    """A long-running part of the server (a listener, the queue workers)."""

    name: str

    async def start(self) -> None:
        """Begin serving; return once ready (listening sockets bound)."""

    async def stop(self, grace: float) -> None:
        """Stop accepting, give in-flight work up to `grace` seconds, then end it."""


@dataclass
class Runtime:
    """What the parts are built from: settings, the store, TLS, the metrics every part counts in and the
    one set of rate limits every protocol shares (built from the settings unless given)."""

    settings: Settings
    db: Database
    tls: ssl.SSLContext | None
    resolver: Resolver
    services: list[Service] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    limits: Limits = None  # type: ignore[assignment]  # set in __post_init__
    _sender_auth: SenderAuthentication | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limits is None:
            self.limits = build_limits(self.settings, self.metrics)

    async def sender_authentication(self) -> SenderAuthentication:
        """SPF/DKIM/DMARC/ARC for inbound mail (the MX and `POST /v1/receive`), built once: one shared
        resolver and one `OrganizationalDomains` (loading the Public Suffix List takes tens of
        milliseconds, so it is done off the loop, once per process)."""
        if self._sender_auth is None:
            from mailcore.auth.dmarc import OrganizationalDomains
            from smtp_in.senderauth import SenderAuthentication

            settings = self.settings
            org = await asyncio.to_thread(OrganizationalDomains)
            if self._sender_auth is None:  # another caller may have built it while we waited
                self._sender_auth = SenderAuthentication(self.resolver, settings.server.hostname, settings.auth,
                                                         dns_timeout=settings.dns.timeout, org=org)
        return self._sender_auth

    @property
    def auth_guard(self) -> AuthGuard:
        """Failed logins, counted across SMTP, IMAP and HTTP on the shared limits."""
        return AuthGuard(self.limits, self.metrics)

    async def close(self) -> None:
        """Release what the runtime holds (the Redis connection of the limits, then the store)."""
        await self.limits.close()
        await self.db.close()


# Builders of services, registered by the protocol issues; each returns the services it wants run.
ServiceFactory = Callable[[Runtime], Awaitable[list[Service]]]


async def smtp_in_services(runtime: Runtime) -> list[Service]:
    """Inbound SMTP: the MX (with sender authentication through the shared resolver), submission
    (STARTTLS) and submissions (implicit TLS) listeners, all answering RCPT from one routing cache,
    which starts before them and stops after them."""
    from smtp_in.server import build_smtp_services
    from storage.routecache import RouteCache

    settings = runtime.settings
    sender_auth = await runtime.sender_authentication()
    routes = RouteCache(runtime.db.dsn)
    return [routes, *build_smtp_services(settings, runtime.db.pool, runtime.tls, sender_auth=sender_auth,
                                         limits=runtime.limits, metrics=runtime.metrics, routes=routes,
                                         resolver=runtime.resolver)]


async def queue_services(runtime: Runtime) -> list[Service]:
    """The outbound queue workers, with the shared resolver for MX lookups."""
    from smtp_out.worker import build_services

    return list(await build_services(runtime.db.pool, runtime.settings, runtime.resolver,
                                     metrics=runtime.metrics))


async def imap_services(runtime: Runtime) -> list[Service]:
    """IMAP with STARTTLS and (when a certificate is configured) implicit TLS, issue 6."""
    from imap.server import IMAPService

    return [IMAPService(runtime.settings, runtime.db.pool, runtime.db.dsn, runtime.tls,
                        auth=runtime.auth_guard, metrics=runtime.metrics)]


async def search_index_services(runtime: Runtime) -> list[Service]:
    """The background indexer of message text for SEARCH BODY/TEXT (storage.bodyindex), unless disabled."""
    from storage.bodyindex import TextIndexer

    if not runtime.settings.search.index:
        return []
    return [TextIndexer(runtime.db.pool, runtime.settings.search)]


def service_factories() -> list[ServiceFactory]:
    """The listeners and workers this build provides, in start order; the worker processes last, since
    they bind the ports the listeners before them were given."""
    return [smtp_in_services, queue_services, imap_services, http_service, search_index_services,
            worker_processes]


def worker_service_factories() -> list[ServiceFactory]:
    """What a worker process (`server.workers`, mailserver.workers) runs: the connection listeners only."""
    return [smtp_in_services, imap_services]


async def worker_processes(runtime: Runtime) -> list[Service]:
    """With `server.workers` > 1, the processes that share the SMTP and IMAP ports with this one."""
    from mailserver.workers import WorkerPool, pin, worker_count

    count = worker_count(runtime.settings)
    if count <= 1:
        return []
    ports: dict[str, int] = {}
    for service in runtime.services:
        bound = getattr(service, "bound_ports", None)
        if bound is not None:
            ports.update(bound())
    pool = WorkerPool(pin(runtime.settings, runtime.db.dsn, ports), count)
    runtime.metrics.sources.append(pool.expositions)  # /metrics then counts every process
    return [pool]


async def http_service(runtime: Runtime) -> list[Service]:
    """The HTTP API (HTTPS with the runtime's certificate when `http.tls`)."""
    from mailcore.proxygate import TrustedPeers
    from mailserver.api import create_app
    from mailserver.api.context import ApiContext
    from mailserver.api.server import HTTPLimits, HttpService
    from mailserver.api.submission import SmtpInSubmitter

    settings = runtime.settings
    if not settings.http.listener.enabled:
        return []
    if settings.http.tls and runtime.tls is None:
        raise TLSConfigError("http.tls: HTTPS needs a certificate (set tls.cert_file, or tls.self_signed)")
    # The API submits and receives through smtp_in's own steps (mailserver.api.submission); what it
    # receives gets the MX's sender authentication, the same object the MX uses.
    submitter = SmtpInSubmitter(runtime.db.pool, settings.server.hostname, settings.smtp.max_message_size,
                                settings.server.postmaster, settings.smtp.spool_threshold,
                                sender_auth=await runtime.sender_authentication())
    ctx = ApiContext.build(settings, runtime.db.pool, runtime.metrics, runtime.limits, submitter)
    return [HttpService(create_app(ctx), settings.http.listener, runtime.tls if settings.http.tls else None,
                        trusted=TrustedPeers(settings.server.proxy_protocol_from),
                        proxy_timeout=settings.server.proxy_protocol_timeout,
                        limits=HTTPLimits.of(settings.http, settings.server.tls_handshake_timeout))]


async def seed_demo(db: Database) -> None:
    """In --dev, make the demo domain and account on first start so the quick start has a mailbox."""
    if await accounts.list_domains(db.pool):
        return
    await accounts.add_domain(db.pool, DEMO_DOMAIN)
    await accounts.add_account(db.pool, DEMO_USER, await hash_password(DEMO_PASSWORD))
    log.info("demo account created", extra={"user": DEMO_USER, "password": DEMO_PASSWORD})


async def build(settings: Settings, *, primary: bool = True) -> Runtime:
    """Open the store and TLS; the services are built by `run`. A worker process (not `primary`) leaves
    migrations and the demo account to the primary, which did them before starting it."""
    configure_cache(settings.server.password_cache)
    db = await Database.open(settings.database, settings.server.data_dir, migrate=primary)
    try:
        paths = await asyncio.to_thread(certificate_paths, settings.tls, settings.server.data_dir,
                                        settings.server.hostname)
        tls = server_context(*paths) if paths else None
        if settings.dev and primary:
            await seed_demo(db)
    except BaseException:
        await db.close()
        raise
    return Runtime(settings=settings, db=db, tls=tls, resolver=Resolver(settings.dns))


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop for `serve` (`server.event_loop`). uvloop does the same work in C that the
    standard loop does in Python (transport writes, callbacks, timers), a tenth of the CPU per SMTP
    message on this server; "auto" takes it when installed, so a platform without it still runs."""
    if choice in ("uvloop", "auto"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise RuntimeError("server.event_loop is 'uvloop' but uvloop is not installed") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


async def run(settings: Settings, ready: Callable[[Runtime], None] | None = None, *, worker: int = 0,
              stop: asyncio.Event | None = None) -> None:
    """Run the server until a stop signal (or `stop` is set), then shut down gracefully. `worker` > 0:
    run as that worker process of a primary (mailserver.workers): its listeners only."""
    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = await build(settings, primary=worker == 0)
    try:
        for factory in service_factories() if worker == 0 else worker_service_factories():
            for service in await factory(runtime):
                await service.start()
                runtime.services.append(service)
                log.info("service started", extra={"service": service.name})
        log.info("server ready", extra={"hostname": settings.server.hostname, "dev": settings.dev,
                                        "embedded_db": runtime.db.embedded is not None})
        if ready is not None:
            ready(runtime)
        await stop.wait()
        log.info("shutting down", extra={"grace": settings.server.shutdown_grace})
    finally:
        # All at once: every listener stops accepting now, and in-flight work everywhere shares the grace.
        results = await asyncio.gather(*(service.stop(settings.server.shutdown_grace)
                                         for service in reversed(runtime.services)), return_exceptions=True)
        for service, result in zip(reversed(runtime.services), results, strict=True):
            if isinstance(result, Exception):
                log.error("service stop failed", exc_info=result, extra={"service": service.name})
        await runtime.close()
        log.info("stopped")
