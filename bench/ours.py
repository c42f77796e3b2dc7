"""Our server for the benchmark: a fresh database, the bench accounts, this checkout's server on its own
ports, what this branch of it offers (listeners, outbound queue), and filling a mailbox through the
store's delivery seam. Everything is removed afterwards unless asked to keep it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from messages import mailbox_size, make_message
from probes import port_open, stop_process

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "benchpass"
DOMAIN = "bench.test"
USERS = [f"u{i}@{DOMAIN}" for i in range(1, 51)]
BOXES = [f"box{n}@{DOMAIN}" for n in (1000, 10000, 100000)] + [f"appender@{DOMAIN}"]
SENDER = "sender@example.org"
SINK, DNS_STUB = 10026, 10053
OURS_MX, OURS_SUBMISSION, OURS_IMAP = 11025, 11587, 11143


def fill_seed(n: int) -> int:
    return 1000 + n


def fill_message(n: int, i: int) -> bytes:
    """Message i of mailbox box<n>: the same bytes for ours and for Dovecot."""
    rng = random.Random(fill_seed(n) * 7919 + i)
    return make_message(fill_seed(n), i, mailbox_size(rng), f"box{n}@{DOMAIN}")


# Where Debian's and the upstream PostgreSQL put their Unix sockets.
SOCKET_DIRS = ("/var/run/postgresql", "/run/postgresql", "/tmp")


def local_socket_dsn(admin_dsn: str, db: str) -> str | None:
    """`db` over PostgreSQL's Unix socket, when `admin_dsn` is TCP to this machine and the socket is there;
    else None. A server sharing the machine with its database talks to it that way (the embedded default
    does; Postfix's daemons talk over Unix sockets too): over TCP loopback every reply and statement also
    runs the TCP stack, 13% of the accept rate at 2 KB x10 (bench/README.md)."""
    url = urllib.parse.urlsplit(admin_dsn)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = url.port or 5432
    for directory in SOCKET_DIRS:
        if Path(directory, f".s.PGSQL.{port}").exists():
            user = url.username or "postgres"
            return f"postgresql://{user}@{urllib.parse.quote(directory, safe='')}:{port}/{db}"
    return None


@dataclass
class Ours:
    """Our server from this checkout, on a fresh database, and what this branch of it offers."""

    admin_dsn: str
    workdir: Path
    db_name: str = ""
    dsn: str = ""
    proc: subprocess.Popen[bytes] | None = None
    smtp: bool = False
    submission: bool = False
    imap: bool = False
    outbound: bool = False
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    search_index: bool = True  # False: no background full-text indexer (what it costs, measured apart)
    workers: int = 1  # server.workers: processes sharing the listening ports (their CPU and RSS count as ours)
    tcp: bool = False  # reach PostgreSQL over TCP even when its Unix socket is on this machine

    @property
    def database(self) -> str:
        """Where our server's database is, for the log and the report (no user)."""
        return urllib.parse.unquote(self.dsn.split("@", 1)[-1])

    @property
    def over_socket(self) -> bool:
        return self.database.startswith("/")

    def config_text(self) -> str:
        from config.settings import QueueSettings

        queue_fields = {f.name for f in dataclasses.fields(QueueSettings)}
        lines = [
            "[server]", 'hostname = "ours.bench.test"', f'data_dir = "{self.workdir / "data"}"',
            "shutdown_grace = 5.0",  # log level: the default (info), as an admin runs it and Postfix logs
            f"workers = {self.workers}",
            "[database]", f'dsn = "{self.dsn}"', "pool_max = 20",
            "[tls]", "self_signed = true",
            "[smtp]", "allow_plaintext_auth = true", "max_connections_per_ip = 1000",
            "max_connections = 2000",
            "[smtp.mx]", 'address = "127.0.0.1"', f"port = {OURS_MX}",
            "[smtp.submission]", 'address = "127.0.0.1"', f"port = {OURS_SUBMISSION}",
            "[smtp.submissions]", "enabled = false",
            "[imap]", "allow_plaintext_auth = true", "max_connections_per_user = 200",
            "[imap.imap]", 'address = "127.0.0.1"', f"port = {OURS_IMAP}",
            "[imap.imaps]", "enabled = false",
            "[http.listener]", "enabled = false",
            "[dns]", 'nameservers = ["127.0.0.1"]', f"port = {DNS_STUB}", "timeout = 1.0",
            "[auth]", "enforce = false",
            # Postfix in this bench has no per-sender or per-client rate limit: ours are set out of reach
            # too, or the full run's 2,000 submissions by one account meet messages_per_hour (451 4.7.1)
            "[limits]", "messages_per_hour = 1000000000.0", "smtp_connections_per_minute = 1000000000.0",
        ]
        if not self.search_index:
            lines += ["[search]", "index = false"]
        if "transports" in queue_fields:
            # only the route to the sink; the queue's own settings stay at their defaults
            lines += ["[queue.transports]", f'"remote.test" = "smtp://127.0.0.1:{SINK}"']
        return "\n".join(lines) + "\n"

    async def create(self) -> None:
        """A fresh database with the schema and the accounts; nothing is reused from an earlier run."""
        import asyncpg

        from config.settings import DatabaseSettings
        from mailcore.passwords import hash_password
        from storage import accounts
        from storage.db import Database

        self.db_name = f"mailbench_{os.getpid()}_{int(time.time())}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            await conn.close()
        base = self.admin_dsn.rsplit("/", 1)[0]
        tcp = f"{base}/{self.db_name}"
        self.dsn = tcp if self.tcp else local_socket_dsn(self.admin_dsn, self.db_name) or tcp
        db = await Database.open(DatabaseSettings(dsn=self.dsn), self.workdir / "data")
        try:
            pw = await hash_password(PASSWORD)
            await accounts.add_domain(db.pool, DOMAIN)
            for box in [*USERS, *(f"box{n}@{DOMAIN}" for n in (1000, 10000, 100000)), f"appender@{DOMAIN}"]:
                await accounts.add_account(db.pool, box, pw)
        finally:
            await db.close()

    def start(self) -> None:
        cfg = self.workdir / "mailserver.toml"
        cfg.write_text(self.config_text())
        self.log_path = self.workdir / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSERVER_")}
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailserver", "serve", "--config", str(cfg)], cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            if b"server ready" in self.log_path.read_bytes():
                break
            time.sleep(0.2)
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-800:]
            self.notes.append(f"our server exited at start ({self.proc.returncode}): {tail}")
            return
        self.smtp = port_open(OURS_MX)
        self.submission = port_open(OURS_SUBMISSION)
        self.imap = port_open(OURS_IMAP)
        try:
            import importlib.util

            has_worker = importlib.util.find_spec("smtp_out.worker") is not None
        except ImportError:
            has_worker = False
        self.outbound = self.submission and has_worker and "[queue.transports]" in cfg.read_text()
        for what, ok in (("SMTP MX listener", self.smtp), ("IMAP listener", self.imap),
                         ("outbound queue with transports + submission", self.outbound)):
            if not ok:
                self.notes.append(f"ours: no {what} on this branch yet; its workloads are skipped")

    def stop(self) -> None:
        stop_process(self.proc)

    async def drop(self) -> None:
        import asyncpg

        if not self.db_name:
            return
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            await conn.close()


async def top_message_id(ours: Ours) -> int:
    """The highest message id in our database now (messages stored later have higher ids)."""
    import asyncpg

    conn = await asyncpg.connect(ours.dsn)
    try:
        return await conn.fetchval("SELECT COALESCE(max(id), 0) FROM messages")
    finally:
        await conn.close()


async def index_caught_up(ours: Ours, limit: float, after_id: int = 0) -> float | None:
    """Seconds until our background full-text indexer has indexed every message and, mail having
    stopped, merged the SEARCH indexes' pending lists (None: not within `limit` seconds, or this
    checkout has no index). The indexer works after a burst of mail (`search.max_defer`) and a mailbox
    filled in one burst is indexed after the fact; on a live server it has caught up within seconds of a
    burst's end, so SEARCH is measured on an indexed store, not during the merge (on 2026-11-30 a SEARCH
    SUBJECT over 100k took 125 ms during it, 61 after), and the catch-up time is reported on its own row
    rather than hidden. `after_id`: only messages above it are waited for (those of one SMTP cell: the
    look-up then reads that range of the primary key, not the whole table, since its CPU counts as ours)."""
    import asyncpg

    from storage.mailsearch import INDEX_NAMES

    if not ours.search_index:
        return None
    t0 = time.perf_counter()
    conn = await asyncpg.connect(ours.dsn)
    try:
        if await conn.fetchval("SELECT to_regclass('message_texts')") is None:
            return None
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")  # contrib, in Debian's server package
        while time.perf_counter() - t0 < limit:
            left = await conn.fetchval("SELECT count(*) FROM messages m WHERE m.id > $1 AND NOT EXISTS"
                                       " (SELECT 1 FROM message_texts t WHERE t.message_id = m.id)", after_id)
            if left == 0:
                pending = await conn.fetchval(
                    "SELECT COALESCE(sum((pgstatginindex(i)).pending_tuples), 0)"
                    " FROM unnest($1::text[]) AS n, to_regclass(n) AS i WHERE i IS NOT NULL",
                    list(INDEX_NAMES.values()))
                if pending == 0:
                    return time.perf_counter() - t0
            await asyncio.sleep(0.25)
        return None
    finally:
        await conn.close()


async def fill_ours(ours: Ours, n: int, workers: int = 8) -> float:
    """Deliver n messages into box<n>'s INBOX through the store's delivery seam (as the MX would)."""
    from config.settings import DatabaseSettings
    from mailcore.mime.precompute import summarize
    from storage import accounts
    from storage.db import Database
    from storage.delivery import Delivery, LocalRecipient

    t0 = time.perf_counter()
    db = await Database.open(DatabaseSettings(dsn=ours.dsn), ours.workdir / "data", migrate=False,
                             pool_max=workers)
    try:
        account = await accounts.get_account(db.pool, f"box{n}@{DOMAIN}")
        assert account is not None
        queue = iter(range(n))

        async def worker() -> None:
            for i in queue:
                raw = fill_message(n, i)
                d = Delivery(sender=SENDER)
                d.add_local(LocalRecipient(account_id=account.id, delivered_to=f"box{n}@{DOMAIN}", unlimited=True))
                await d.commit(db.pool, raw, summarize(raw))

        await asyncio.gather(*(worker() for _ in range(workers)))
    finally:
        await db.close()
    return time.perf_counter() - t0
