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
    (("domain", "add", "1.2.3.4"), "", 1, "numeric label"),
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
    """The example names certificates of a real deployment, so only --no-files passes everywhere."""
    r = run(None, "config", "check", "--no-files", str(ROOT / "mailserver.example.toml"))
    assert r.returncode == 0 and "configuration OK" in r.stdout
    if not Path("/etc/letsencrypt/live/mail.example.com/fullchain.pem").exists():
        r = run(None, "config", "check", str(ROOT / "mailserver.example.toml"))
        assert r.returncode == 2 and "tls.cert_file: /etc/letsencrypt/" in r.stderr, r.stderr


def test_db_status_and_migrate(db_dsn: str) -> None:
    r = run(db_dsn, "db", "migrate")
    assert r.returncode == 0 and "applied 0 migration(s)" in r.stdout
    assert "0001 initial\tapplied" in run(db_dsn, "db", "status").stdout


def run_bytes(dsn: str, *args: str | bytes, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """`run` for arguments and input that are not UTF-8 (what a shell passes with $'\\xff')."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSERVER_")}
    env.update(PYTHONPATH=str(ROOT), MAILSERVER_DATABASE__DSN=dsn)
    return subprocess.run([sys.executable, "-m", "mailserver", *args], input=stdin, capture_output=True,
                          env=env, timeout=120, cwd=ROOT)


BIG = "99999999999999999999999"


@pytest.mark.parametrize(("args", "stdin", "message"), [
    # Each was a traceback (UnicodeEncodeError or asyncpg DataError) with exit 1.
    (("user", "add", b"\xff@example.test"), b"secret-password\n", b"address '\\xff@example.test': not valid UTF-8"),
    (("user", "passwd", b"\xff@example.test"), b"secret-password\n", b"not valid UTF-8"),
    (("alias", "add", "a@example.test", b"\xff@far.example"), b"", b"targets '\\xff@far.example': not valid"),
    (("token", "create", b"\xff@example.test", "--scope", "send"), b"", b"not valid UTF-8"),
    (("dkim", "show", b"\xff.example"), b"", b"domain '\\xff.example': not valid UTF-8"),
    (("dns", b"\xff.example"), b"", b"not valid UTF-8"),
    (("user", "add", "b@example.test"), b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\n", b"password on standard input is not"),
    (("user", "add", "c@example.test", "--quota", "99999999999999999999G"), b"secret-password\n",
     b"invalid size '99999999999999999999G': at most"),
    (("user", "quota", "dup@example.test", BIG), b"", b"at most 9223372036854775807 bytes"),
    (("user", "quota", "dup@example.test", "\u0661\u0662"), b"", b"invalid size"),  # Arabic-Indic digits
    (("queue", "show", BIG), b"", b"must be 1-9223372036854775807"),
    (("queue", "retry", BIG), b"", b"must be 1-"),
    (("queue", "delete", BIG), b"", b"must be 1-"),
    (("queue", "hold", BIG), b"", b"must be 1-"),
    (("queue", "release", "-" + BIG), b"", b"must be 1-"),
    (("token", "revoke", BIG), b"", b"must be 1-"),
    (("queue", "show", "abc"), b"", b"invalid id 'abc'"),
    # Was "unhealthy: ... TimeoutError" (exit 1) for a database that is fine.
    (("health", "--timeout", "-1"), b"", b"must be greater than 0"),
    (("health", "--timeout", "nan"), b"", b"must be greater than 0"),
])
def test_malformed_arguments_are_usage_errors(db_dsn: str, args: tuple[str | bytes, ...], stdin: bytes,
                                              message: bytes) -> None:
    run(db_dsn, "domain", "add", "example.test")
    run(db_dsn, "user", "add", "dup@example.test", stdin="secret-password\n")
    r = run_bytes(db_dsn, *args, stdin=stdin)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and b"Traceback" not in r.stderr, r.stderr
    assert run(db_dsn, "user", "list").stdout.splitlines() == ["dup@example.test\t0\tunlimited\t"]


def test_config_check_with_a_non_utf8_file_name(tmp_path: Path) -> None:
    path = os.fsencode(tmp_path) + b"/\xff.toml"
    with open(path, "wb") as fh:
        fh.write(b"[server]\nhostname = \"mx.example\"\n")
    r = run_bytes("", "config", "check", path)
    assert r.returncode == 0, r.stderr


LOOPBACK_LISTENERS = {f"MAILSERVER_{key}__{field}": value for key in (
    "SMTP__MX", "SMTP__SUBMISSION", "SMTP__SUBMISSIONS", "IMAP__IMAP", "IMAP__IMAPS", "HTTP__LISTENER")
    for field, value in (("ADDRESS", "127.0.0.1"), ("PORT", "0"))}


@pytest.mark.parametrize(("commands", "env", "message"), [
    # Were tracebacks from the middle of `serve`'s start-up (exit 1), and `config check` said OK.
    (("serve", "config check"), {"MAILSERVER_SERVER__DATA_DIR": "{file}"}, "server.data_dir: {file} is not a directory"),
    (("serve", "config check"), {"MAILSERVER_QUEUE__TLS_CA_FILE": "{missing}"},
     "queue.tls_ca_file: cannot load {missing}: No such file or directory"),
    (("serve",), {"MAILSERVER_SERVER__DATA_DIR": "{file}/sub"}, "server.data_dir: cannot create {file}/sub"),
    (("config check",), {"MAILSERVER_TLS__CERT_FILE": "{missing}"}, "tls.cert_file: {missing} does not exist"),
    (("config check",), {"MAILSERVER_TLS__CERT_FILE": "{file}"}, "tls.cert_file: cannot load {file}"),
    (("serve",), {"MAILSERVER_IMAP__IMAPS__PORT": "{busy}"}, "imap.imaps.port: cannot listen on 127.0.0.1 port {busy}"),
    (("serve",), {"MAILSERVER_SMTP__SUBMISSION__PORT": "{busy}"}, "smtp.submission.port: cannot listen"),
])
def test_files_and_ports_are_checked_before_start(tmp_path: Path, commands: tuple[str, ...],
                                                  env: dict[str, str], message: str) -> None:
    import socket

    file = tmp_path / "plain-file"
    file.write_text("not a directory, not a certificate\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        names = {"file": str(file), "missing": str(tmp_path / "missing.pem"), "busy": str(busy.getsockname()[1])}
        full_env = {**LOOPBACK_LISTENERS, "MAILSERVER_SERVER__DATA_DIR": str(tmp_path / "data"),
                    **{k: v.format(**names) for k, v in env.items()}}
        for command in commands:
            r = run(None, *command.split(), env=full_env)
            assert r.returncode == 2, (command, r.stderr)
            assert message.format(**names) in r.stderr and "Traceback" not in r.stderr, (command, r.stderr)


def test_two_listeners_on_one_port_is_a_config_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    env = {**LOOPBACK_LISTENERS, "MAILSERVER_SERVER__DATA_DIR": str(tmp_path),
           "MAILSERVER_SMTP__MX__PORT": port, "MAILSERVER_IMAP__IMAP__PORT": port}
    r = run(None, "serve", env=env)
    assert r.returncode == 2 and f"imap.imap.port: cannot listen on 127.0.0.1 port {port}" in r.stderr, r.stderr
