"""Run the real server (`python -m mailserver serve`) as a subprocess for end-to-end and crash tests.

Reusable by every team: give it a database address (a fresh test database from the `db_dsn` fixture) and
a data directory; it picks free loopback ports for the listeners you name, passes all configuration
through `MAILSERVER_*` environment variables (no config file), waits until every port accepts
connections, and stops the process with SIGTERM (graceful) or SIGKILL (crash). The server's JSON log
goes to `<data_dir>/server.log`; `log_tail()` shows it when something fails.

    proc = ServerProcess(db_dsn, tmp_path, listeners=["smtp.mx"])
    await proc.start()
    port = proc.ports["smtp.mx"]
    ...
    proc.kill()            # or: await proc.stop()

Listeners are named by their settings path ("smtp.mx", "smtp.submission", "imap.imap", "http.listener").
Those not named but known in `KNOWN_LISTENERS` are disabled so they never bind the real ports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KNOWN_LISTENERS = ("smtp.mx", "smtp.submission", "smtp.submissions", "imap.imap", "imap.imaps",
                   "http.listener")


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the usual small race is accepted in tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env_key(path: str) -> str:
    return "MAILSERVER_" + "__".join(part.upper() for part in path.split("."))


_LOCAL_DNS = None


def local_dns_port() -> int:
    """The port of a DNS server on loopback, shared by every server process of this test run, that
    knows no names (NXDOMAIN with an SOA at once): a server process never asks the machine's resolver,
    which is the outside world, slow or gone under load (DMARC lookups timing out turned 250s into 451s)."""
    global _LOCAL_DNS
    if _LOCAL_DNS is None:
        from tests.dnsserver import DNSTestServer

        _LOCAL_DNS = DNSTestServer({}).start()
    return _LOCAL_DNS.port


class ServerProcess:
    """One server subprocess; `start` may be called again after `stop`/`kill` (same ports, same data)."""

    def __init__(self, dsn: str, data_dir: Path, *, listeners: Iterable[str] = ("smtp.mx",),
                 env: Mapping[str, str] | None = None) -> None:
        self.dsn = dsn
        self.data_dir = Path(data_dir)
        self.ports = {name: free_port() for name in listeners}
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    def environment(self) -> dict[str, str]:
        """The full environment of the child: ours, minus inherited MAILSERVER_* keys, plus the config."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSERVER_")}
        env.update({
            "MAILSERVER_DATABASE__DSN": self.dsn,
            "MAILSERVER_DATABASE__POOL_MIN": "1",
            "MAILSERVER_SERVER__DATA_DIR": str(self.data_dir),
            "MAILSERVER_SERVER__HOSTNAME": "mx.test.example",
            "MAILSERVER_SERVER__SHUTDOWN_GRACE": "2",
            "MAILSERVER_TLS__SELF_SIGNED": "true",
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        })
        if "MAILSERVER_DNS__NAMESERVERS" not in self.extra_env:
            env.update({"MAILSERVER_DNS__NAMESERVERS": '["127.0.0.1"]',
                        "MAILSERVER_DNS__PORT": str(local_dns_port())})
        for name in KNOWN_LISTENERS:
            if name not in self.ports:
                env[_env_key(name + ".enabled")] = "false"
        for name, port in self.ports.items():
            env[_env_key(name + ".address")] = "127.0.0.1"
            env[_env_key(name + ".port")] = str(port)
        env.update(self.extra_env)
        return env

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to be ready (see `start`)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "mailserver", "serve"], cwd=REPO,
                                         env=self.environment(), stdout=log, stderr=log,
                                         start_new_session=True)
        return self.proc

    async def start(self, ready_within: float = 30.0) -> None:
        """Spawn the server and return once every listener accepts connections."""
        self.spawn()
        assert self.proc is not None
        timeout = ready_within
        deadline = time.monotonic() + timeout
        pending = set(self.ports.values())
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_tail()}")
            for port in list(pending):
                if await _accepts(port):
                    pending.discard(port)
            if pending:
                await asyncio.sleep(0.1)

    async def stop(self, grace: float = 15.0) -> int:
        """SIGTERM and wait for a graceful exit; SIGKILL if it takes longer than `grace` seconds."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), grace)
            except TimeoutError:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL now (a crash), and reap the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True
