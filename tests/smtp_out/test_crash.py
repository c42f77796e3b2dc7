"""At-least-once across a crash: the server (a real subprocess) is SIGKILLed mid-DATA, then restarted;
every queued message still arrives, and the one whose DATA never got its 250 arrives exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg

from tests.smtp_out.conftest import submit, until

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, dsn: str, port: int) -> Path:
    path = tmp_path / "mailserver.toml"
    path.write_text(f"""
[server]
hostname = "mx.ours.example"
data_dir = "{tmp_path}"
shutdown_grace = 1.0
[database]
dsn = "{dsn}"
pool_min = 1
pool_max = 4
[smtp.mx]
enabled = false
[smtp.submission]
enabled = false
[smtp.submissions]
enabled = false
[imap.imap]
enabled = false
[imap.imaps]
enabled = false
[http.listener]
enabled = false
[queue]
workers = 2
lease_seconds = 2.0
poll_interval = 0.2
[queue.transports]
"far.example" = "smtp://127.0.0.1:{port}"
""")
    return path


async def _serve(config: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSERVER_")}
    env["PYTHONPATH"] = str(ROOT)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailserver", "serve", "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


async def test_sigkill_during_delivery_then_restart(pool: asyncpg.Pool, db_dsn: str, ours: int, sinks,
                                                   tmp_path: Path) -> None:
    sink = await sinks(data="stall")
    for i in range(5):
        await submit(pool, f"r{i}@far.example")
    config = _config(tmp_path, db_dsn, sink.port)
    server = await _serve(config)
    try:
        await until(lambda: sink.rcpt_attempts, 20)  # a delivery is now stalled in DATA
        await asyncio.sleep(0.3)
        assert sink.received == []
        server.send_signal(signal.SIGKILL)
        await server.wait()
        leased = await pool.fetchval("SELECT count(*) FROM queue WHERE lease_owner IS NOT NULL")
        assert leased >= 1  # the dead process's claims are still held ...
        sink.data = None
        server = await _serve(config)  # ... until their leases expire; then the new process delivers
        await until(lambda: len(sink.recipients) >= 5, 30)
        await until(lambda: _empty(pool), 10)
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await server.wait()
            except TimeoutError:
                server.kill()
                await server.wait()
    assert sorted(sink.recipients) == sorted(f"r{i}@far.example" for i in range(5))
    assert server.returncode == 0  # SIGTERM: a clean, graceful stop


async def _empty(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM queue") == 0
