"""The PostgreSQL that tests use: the one at MAILSERVER_TEST_DSN (CI's), else a private embedded one.

Each test gets a fresh database cloned from a migrated template, so tests never see each other's rows
and the schema is applied once per run. Never skipped silently: if no server can be had, tests fail.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

_counter = itertools.count()


class PgServer:
    """Hands out fresh databases on one server."""

    def __init__(self) -> None:
        self.embedded = None
        dsn = os.environ.get("MAILSERVER_TEST_DSN", "")
        if not dsn:
            from storage.db import EmbeddedPostgres

            base = Path(tempfile.gettempdir()) / "mailserver-test-pg"
            self.embedded = EmbeddedPostgres.start(base / "pgdata")
            dsn = self.embedded.uri
        self.admin_dsn = dsn
        self.prefix = f"mst_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.template = f"{self.prefix}_template"
        self.created: list[str] = []

    def dsn_for(self, database: str) -> str:
        """The DSN of `database` on the same server."""
        parts = urlsplit(self.admin_dsn)
        return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))

    async def prepare_template(self) -> None:
        """Create the migrated template database once per run."""
        from storage.migrations import apply_migrations

        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.dsn_for(self.template))
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    async def new_database(self, migrated: bool = True) -> str:
        """A fresh database (a copy of the migrated template, or empty); returns its DSN."""
        name = f"{self.prefix}_{next(_counter)}"
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            template = self.template if migrated else "template0"
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await admin.close()
        self.created.append(name)
        return self.dsn_for(name)

    async def drop_all(self) -> None:
        """Drop every database this run created."""
        # Dropping is fsync-bound; a few connections in parallel make it several times faster.
        names = list(self.created)

        async def dropper() -> None:
            admin = await asyncpg.connect(self.admin_dsn)
            try:
                while names:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{names.pop()}" WITH (FORCE)')
            finally:
                await admin.close()

        await asyncio.gather(*[dropper() for _ in range(4)])
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        finally:
            await admin.close()
        if self.embedded is not None:
            self.embedded.stop()
