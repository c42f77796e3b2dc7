"""`server.workers`: the real `mailserver serve` with worker processes sharing its SMTP and IMAP ports.

Each test runs the server as a subprocess and looks at it from outside: which processes listen on the
ports (psutil), which process accepted each message (the `worker` field of the JSON log), what the
mailbox holds over IMAP, and what is left after the primary ends (SIGTERM, or SIGKILL with no chance to
clean up)."""

from __future__ import annotations

import asyncio
import collections
import imaplib
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.loader import load_settings
from mailserver import workers as workers_module
from mailserver.workers import WorkerFailed, WorkerPool, pin, worker_count
from storage import accounts
from tests.mailserver.test_cli import ROOT
from tests.server_process import ServerProcess
from tests.smtp_in.harness import HASH, PASSWORD
from tests.smtp_out.conftest import until

DOMAIN = "workers.example"
USER = f"rcpt@{DOMAIN}"


def _workers(pid: int) -> list[psutil.Process]:
    """The worker processes of a primary (not its search indexer's decoding child)."""
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for child in children:
        try:
            if "mailserver.workers" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:  # ended (a zombie until the primary reaps it)
            pass
    return out


def _listening(pid: int, port: int) -> bool:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def _log(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


async def _workers_ready(server: ServerProcess) -> None:
    """`start` returns once the primary listens; the workers bind after it (the pool is its last service)."""
    await until(lambda: any(r.get("event") == "service started" and r.get("service") == "workers"
                            for r in _log(server.log_path)), seconds=30)


def _send(port: int, n: int) -> None:
    """n messages, each over a connection of its own (the kernel picks the process per connection)."""
    for i in range(n):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "someone@sender.example", USER, f"worker test {i}"
        msg.set_content("hello\n")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(msg)


def _count(port: int) -> int:
    imap = imaplib.IMAP4("127.0.0.1", port, timeout=10)
    try:
        imap.starttls()
        imap.login(USER, PASSWORD)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK"
        return int(data[0])
    finally:
        imap.logout()


def _received(port: int) -> float:
    """mailserver_messages_received_total{via="mx"} as the primary's /metrics gives it."""
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the server's self-signed certificate
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", timeout=10, context=tls) as response:
        text = response.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "mailserver_messages_received_total" and s.labels == {"via": "mx"})


async def _two_processes(db_dsn: str, pool: asyncpg.Pool, tmp_path: Path,
                         listeners: list[str]) -> tuple[ServerProcess, psutil.Process]:
    """The server with one worker, both serving `listeners`, and a mailbox for USER; (server, worker)."""
    await accounts.add_domain(pool, DOMAIN)
    await accounts.add_account(pool, USER, HASH)
    server = ServerProcess(db_dsn, tmp_path, listeners=listeners, env={"MAILSERVER_SERVER__WORKERS": "2"})
    await server.start()
    try:
        assert server.proc is not None
        await _workers_ready(server)
        return server, _workers(server.proc.pid)[0]
    except BaseException:
        await server.stop()
        raise


async def test_workers_share_the_ports_and_both_deliver(db_dsn: str, pool: asyncpg.Pool, tmp_path: Path) -> None:
    server, worker = await _two_processes(db_dsn, pool, tmp_path, ["smtp.mx", "imap.imap", "http.listener"])
    try:
        assert server.proc is not None
        for listener in ("smtp.mx", "imap.imap"):  # the HTTP API is the primary's alone
            port = server.ports[listener]
            assert _listening(server.proc.pid, port) and _listening(worker.pid, port)
        assert not _listening(worker.pid, server.ports["http.listener"])
        await asyncio.to_thread(_send, server.ports["smtp.mx"], 30)
        accepted = [r for r in _log(server.log_path) if r.get("event") == "smtp message accepted"]
        assert len(accepted) == 30
        # 30 connections hashed over two sockets: all on one side has odds of 2 in 2**30.
        assert {r.get("worker", 0) for r in accepted} == {0, 1}
        assert await asyncio.to_thread(_count, server.ports["imap.imap"]) == 30
        # The primary's /metrics counts the worker's messages too (alone it would say about 15).
        assert await asyncio.to_thread(_received, server.ports["http.listener"]) == 30
    finally:
        assert await server.stop() == 0
    assert not _workers(server.proc.pid) and not psutil.pid_exists(worker.pid)


async def test_a_dead_worker_is_replaced(db_dsn: str, pool: asyncpg.Pool, tmp_path: Path) -> None:
    server, first = await _two_processes(db_dsn, pool, tmp_path, ["smtp.mx", "http.listener"])
    try:
        assert server.proc is not None
        port = server.ports["smtp.mx"]
        first.kill()

        def replaced() -> bool:
            now = _workers(server.proc.pid)
            restarted = any(r.get("event") == "worker process restarted" for r in _log(server.log_path))
            return restarted and len(now) == 1 and now[0].pid != first.pid and _listening(now[0].pid, port)

        await until(replaced, seconds=30)
        ended = [r for r in _log(server.log_path) if r.get("event") == "worker process ended; starting another"]
        assert [(r["worker"], r["exit"]) for r in ended] == [(1, -signal.SIGKILL)]
        await asyncio.to_thread(_send, port, 6)
        accepted = [r for r in _log(server.log_path) if r.get("event") == "smtp message accepted"]
        assert len(accepted) == 6
        assert await asyncio.to_thread(_received, server.ports["http.listener"]) == 6  # the new worker's too
    finally:
        assert await server.stop() == 0


async def test_a_worker_ends_when_its_primary_is_killed(db_dsn: str, tmp_path: Path) -> None:
    server = ServerProcess(db_dsn, tmp_path, listeners=["smtp.mx"], env={"MAILSERVER_SERVER__WORKERS": "2"})
    await server.start()
    assert server.proc is not None
    await _workers_ready(server)
    worker = _workers(server.proc.pid)[0]
    server.kill()  # SIGKILL: the primary cannot tell the worker; the worker sees its stdin end
    try:
        await until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, seconds=20)
    finally:
        if worker.is_running():
            worker.kill()
    stopped = [r for r in _log(server.log_path) if r.get("worker") == 1 and r.get("event") == "stopped"]
    assert stopped, "the worker did not shut down gracefully"


def test_workers_with_the_embedded_database_and_port_zero(tmp_path: Path) -> None:
    """The quick start's shape: `serve --dev` (embedded PostgreSQL, ports 0 here). The worker must join
    the primary's database and the port the kernel gave the primary, not start or pick its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSERVER_")}
    env.update({"PYTHONPATH": str(ROOT), "MAILSERVER_SERVER__WORKERS": "2", "MAILSERVER_SMTP__MX__PORT": "0",
                "MAILSERVER_SMTP__SUBMISSION__ENABLED": "false", "MAILSERVER_SMTP__SUBMISSIONS__ENABLED": "false",
                "MAILSERVER_IMAP__IMAP__PORT": "0", "MAILSERVER_IMAP__IMAPS__ENABLED": "false",
                "MAILSERVER_HTTP__LISTENER__ENABLED": "false"})
    proc = subprocess.Popen([sys.executable, "-m", "mailserver", "serve", "--dev"], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    records: list[dict] = []
    try:
        deadline = time.monotonic() + 90
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            records.append(json.loads(line))
            if records[-1].get("event") == "server ready" and "worker" not in records[-1]:
                break
        else:
            raise AssertionError("not ready")
        ports = {(r.get("worker", 0), r["listener"]): r["port"] for r in records
                 if r.get("event") in ("smtp listener started", "imap listening")}
        assert ports[(0, "mx")] == ports[(1, "mx")] != 0 and ports[(0, "imap")] == ports[(1, "imap")] != 0
        assert [r.get("worker", 0) for r in records if r.get("event") == "server ready"] == [1, 0]
        worker = _workers(proc.pid)[0]
        assert not any(r.get("embedded_db") for r in records if r.get("worker") == 1)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "a@sender.example", "demo@example.test", "embedded"
        msg.set_content("hi\n")
        for _ in range(4):
            with smtplib.SMTP("127.0.0.1", ports[(0, "mx")], timeout=10) as smtp:
                assert smtp.send_message(msg) == {}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert not psutil.pid_exists(worker.pid) or worker.status() == psutil.STATUS_ZOMBIE


def test_pin_gives_the_worker_the_primarys_database_and_bound_ports() -> None:
    settings = load_settings(None, environ={"MAILSERVER_SMTP__MX__PORT": "0", "MAILSERVER_SERVER__WORKERS": "0"})
    pinned = pin(settings, "postgresql://x@127.0.0.1:5/db", {"smtp.mx": 40001, "imap.imaps": 40002})
    assert pinned.database.dsn == "postgresql://x@127.0.0.1:5/db"
    assert (pinned.smtp.mx.port, pinned.imap.imaps.port) == (40001, 40002)
    assert pinned.smtp.submission == settings.smtp.submission and pinned.imap.imap == settings.imap.imap
    assert worker_count(settings) == (os.cpu_count() or 1)


async def test_a_worker_that_cannot_start_fails_the_pool(db_dsn: str) -> None:
    """A worker that ends before it says `ready` (here: its port is held by a socket without SO_REUSEPORT,
    so its bind fails) makes `start` raise WorkerFailed, which `serve` reports with exit code 1, rather
    than running with fewer processes than configured."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        settings = load_settings(None, environ={
            "MAILSERVER_SERVER__WORKERS": "2", "MAILSERVER_SMTP__SUBMISSION__ENABLED": "false",
            "MAILSERVER_SMTP__SUBMISSIONS__ENABLED": "false", "MAILSERVER_IMAP__IMAP__ENABLED": "false",
            "MAILSERVER_IMAP__IMAPS__ENABLED": "false", "MAILSERVER_HTTP__LISTENER__ENABLED": "false"})
        pool = WorkerPool(pin(settings, db_dsn, {"smtp.mx": port}), 2)
        with pytest.raises(WorkerFailed, match="worker process 1 did not start"):
            await pool.start()
        assert pool.procs[1].returncode not in (None, 0)
        assert not _workers(os.getpid())


async def test_a_stalled_worker_is_left_out_of_one_scrape_and_counted_again_after(
        db_dsn: str, pool: asyncpg.Pool, tmp_path: Path) -> None:
    """A worker that cannot answer (stopped with SIGSTOP) costs a scrape its figures, not the scrape; its
    late reply is matched to the request it answers, so the next scrape has the right figures again."""
    server, worker = await _two_processes(db_dsn, pool, tmp_path, ["smtp.mx", "http.listener"])
    try:
        await asyncio.to_thread(_send, server.ports["smtp.mx"], 20)
        accepted = [r for r in _log(server.log_path) if r.get("event") == "smtp message accepted"]
        by_primary = sum(1 for r in accepted if "worker" not in r)
        assert 0 < by_primary < 20
        worker.suspend()
        try:
            assert await asyncio.to_thread(_received, server.ports["http.listener"]) == by_primary
        finally:
            worker.resume()
        assert any(r.get("event") == "worker metrics unavailable" for r in _log(server.log_path))
        assert await asyncio.to_thread(_received, server.ports["http.listener"]) == 20
        assert await asyncio.to_thread(_received, server.ports["http.listener"]) == 20
    finally:
        assert await server.stop() == 0


def test_serve_exits_1_when_a_worker_cannot_start(db_dsn: str, tmp_path: Path) -> None:
    """The whole path through `mailserver serve`: a worker that ends before saying ready (here a
    sitecustomize on PYTHONPATH ends every `mailserver.workers` process at start, as a broken install
    would) makes the primary stop what it started and exit 1, naming the worker, rather than serve with
    fewer processes than configured."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import os, sys\nif 'mailserver.workers' in sys.orig_argv:\n"
                                           "    os._exit(3)\n")
    server = ServerProcess(db_dsn, tmp_path / "data", listeners=["smtp.mx"],
                           env={"MAILSERVER_SERVER__WORKERS": "2",
                                "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])})
    proc = server.spawn()
    try:
        assert proc.wait(timeout=90) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    text = server.log_path.read_text(errors="replace")
    assert "worker process 1 did not start (exit 3)" in text
    assert any(r.get("event") == "stopped" and "worker" not in r for r in _log(server.log_path))


# A frame header announcing 3 bytes, then 3 bytes that are not a pickle: what a stray write into either
# pipe would look like.
_NOT_A_FRAME = (3).to_bytes(8, "big") + b"not"


async def test_a_worker_stops_when_its_request_pipe_carries_no_frame() -> None:
    """The request loop is what notices the primary's end: if it died on garbage instead of stopping
    the worker, a worker could outlive its primary, holding the ports."""
    requests = asyncio.StreamReader()
    requests.feed_data(_NOT_A_FRAME)
    stop = asyncio.Event()
    await asyncio.wait_for(workers_module._serve_requests(requests, workers_module._Answers(), stop), 10)
    assert stop.is_set()


async def test_the_primary_stops_asking_a_worker_whose_replies_are_not_frames() -> None:
    """A scrape waiting on that worker gets an error at once, and later scrapes do not ask it (each
    would wait METRICS_TIMEOUT for a reply the broken stream cannot be trusted to match)."""
    pool = WorkerPool(load_settings(None, environ={}), 2)
    waiting: collections.deque[asyncio.Future[bytes]] = collections.deque([asyncio.get_running_loop().create_future()])
    pool._waiting[1] = waiting
    stdout = asyncio.StreamReader()
    stdout.feed_data(_NOT_A_FRAME)
    asked = waiting[0]
    await asyncio.wait_for(pool._replies(1, stdout, waiting), 10)
    assert isinstance(asked.exception(), EOFError)
    assert 1 not in pool._waiting
