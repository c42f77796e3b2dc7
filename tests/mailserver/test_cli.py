"""The `mailserver` command as an admin runs it: a real process on a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(dsn: str | None, *args: str, stdin: str = "", env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m mailserver ARGS` with the database at `dsn`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSERVER_")}
    full_env["PYTHONPATH"] = str(ROOT)
    if dsn:
        full_env["MAILSERVER_DATABASE__DSN"] = dsn
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "mailserver", *args], input=stdin, capture_output=True,
                          text=True, env=full_env, timeout=120, cwd=cwd or ROOT)


def test_domain_user_alias_round_trip(db_dsn: str) -> None:
    assert run(db_dsn, "domain", "add", "Example.TEST").returncode == 0
    assert run(db_dsn, "domain", "list").stdout.split() == ["example.test"]
    r = run(db_dsn, "user", "add", "joe@example.test", "--quota", "10M", stdin="secret-password\n")
    assert r.returncode == 0, r.stderr
    listing = run(db_dsn, "user", "list").stdout
    assert "joe@example.test\t0\t10485760" in listing
    assert run(db_dsn, "user", "quota", "joe@example.test", "none").returncode == 0
    assert "unlimited" in run(db_dsn, "user", "list", "--domain", "example.test").stdout
    assert run(db_dsn, "user", "passwd", "joe@example.test", stdin="another-password\n").returncode == 0
    assert run(db_dsn, "alias", "add", "info@example.test", "joe@example.test", "x@far.example").returncode == 0
    assert run(db_dsn, "alias", "list").stdout.splitlines() == [
        "info@example.test\tjoe@example.test", "info@example.test\tx@far.example"]
    assert run(db_dsn, "alias", "remove", "info@example.test", "x@far.example").returncode == 0
    assert run(db_dsn, "alias", "remove", "info@example.test").returncode == 0
    assert run(db_dsn, "user", "remove", "joe@example.test").returncode == 0
    assert run(db_dsn, "domain", "remove", "example.test").returncode == 0
    assert run(db_dsn, "domain", "list").stdout == ""


@pytest.mark.parametrize(("args", "stdin", "code", "message"), [
    (("user", "add", "a@unknown.test"), "secret-password\n", 1, "unknown domain: unknown.test"),
    (("user", "add", "not-an-address"), "secret-password\n", 1, "invalid address"),
    (("user", "add", "a@example.test"), "short\n", 2, "at least 8 characters"),
    (("user", "add", "dup@example.test"), "secret-password\n", 1, "already exists"),
    (("user", "passwd", "ghost@example.test"), "secret-password\n", 1, "no such account"),
    (("user", "quota", "dup@example.test", "lots"), "", 2, "invalid size"),
    (("domain", "add", "example.test"), "", 1, "already exists"),
    (("domain", "add", "bad domain"), "", 1, "invalid domain"),
    (("alias", "add", "x@example.test", "not-an-address"), "", 1, "invalid address"),
    (("frobnicate",), "", 2, "invalid choice"),
])
def test_refusals_and_usage_errors(db_dsn: str, args: tuple[str, ...], stdin: str, code: int,
                                   message: str) -> None:
    run(db_dsn, "domain", "add", "example.test")
    run(db_dsn, "user", "add", "dup@example.test", stdin="secret-password\n")
    r = run(db_dsn, *args, stdin=stdin)
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("content", "message"), [
    ("[smtp]\nmax_recipents = 5\n", "smtp.max_recipents: unknown setting"),
    ("[smtp.mx]\nport = 99999\n", "smtp.mx.port: must be 0-65535"),
    ("[smtp\n", "invalid TOML"),
])
def test_config_errors_exit_2(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    for args in (("config", "check", str(path)), ("serve", "--config", str(path)),
                 ("domain", "list", "--config", str(path))):
        r = run(None, *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_env_override_error_names_key() -> None:
    r = run(None, "serve", env={"MAILSERVER_SMTP__MX__PORT": "twenty-five"})
    assert r.returncode == 2 and "smtp.mx.port: must be an integer" in r.stderr


def test_config_check_accepts_example() -> None:
    r = run(None, "config", "check", str(ROOT / "mailserver.example.toml"))
    assert r.returncode == 0 and "configuration OK" in r.stdout


def test_db_status_and_migrate(db_dsn: str) -> None:
    r = run(db_dsn, "db", "migrate")
    assert r.returncode == 0 and "applied 0 migration(s)" in r.stdout
    assert "0001 initial\tapplied" in run(db_dsn, "db", "status").stdout
