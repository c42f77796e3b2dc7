"""Config loading: layers, the example file, and one clear error per kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, iter_documented, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    s = load_settings(ROOT / "mailserver.example.toml")
    assert s.server.hostname == "mail.example.com"
    assert s.smtp.mx.port == 25 and s.smtp.submission.port == 587


def test_defaults_are_production_ports() -> None:
    s = load_settings()
    assert (s.smtp.mx.port, s.smtp.submission.port, s.smtp.submissions.port) == (25, 587, 465)
    assert (s.imap.imap.port, s.imap.imaps.port, s.http.listener.port) == (143, 993, 8443)
    assert not s.dev and s.database.dsn == ""


def test_dev_profile_ports_and_overrides() -> None:
    s = load_settings(dev=True)
    assert (s.smtp.mx.port, s.smtp.submission.port, s.smtp.submissions.port) == (2525, 2587, 2465)
    assert (s.imap.imap.port, s.imap.imaps.port, s.http.listener.port) == (2143, 2993, 8025)
    assert s.tls.self_signed and s.smtp.allow_plaintext_auth and not s.auth.enforce
    s = load_settings(dev=True, environ={"MAILSERVER_SMTP__MX__PORT": "3000"})
    assert s.smtp.mx.port == 3000 and s.smtp.mx.address == "127.0.0.1"


def test_file_then_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, '[smtp.mx]\nenabled = false\n[dns]\nnameservers = ["127.0.0.1"]\n')
    s = load_settings(path, environ={"MAILSERVER_DNS__TIMEOUT": "2", "MAILSERVER_SERVER__HOSTNAME": "mx.test"})
    assert s.smtp.mx.enabled is False and s.smtp.mx.port == 25  # a partial table keeps its defaults
    assert s.dns.nameservers == ["127.0.0.1"] and s.dns.timeout == 2.0
    assert s.server.hostname == "mx.test"


@pytest.mark.parametrize(("text", "env", "message"), [
    ("[smtp]\nmax_recipents = 5\n", {}, "smtp.max_recipents: unknown setting"),
    ("[nosuch]\n", {}, "nosuch: unknown setting"),
    ("[smtp.mx]\nport = 70000\n", {}, "smtp.mx.port: must be 0-65535"),
    ("[smtp.mx]\nport = \"25\"\n", {}, "smtp.mx.port: must be an integer"),
    ("[smtp]\nmax_recipients = 0\n", {}, "smtp.max_recipients: must be greater than 0"),
    ("[server]\nlog_level = \"loud\"\n", {}, "server.log_level: must be one of"),
    ("[tls]\nself_signed = \"yes\"\n", {}, "tls.self_signed: must be true or false"),
    ("[dns]\nnameservers = \"1.1.1.1\"\n", {}, "dns.nameservers: must be a list of str"),
    ("smtp = 5\n", {}, "smtp: must be a table"),
    ("[smtp\n", {}, "invalid TOML"),
    ("", {"MAILSERVER_IMAP__IMAPS__PORT": "-1"}, "imap.imaps.port: must be 0-65535"),
    ("", {"MAILSERVER_SERVER__HOSTNAME": "bad host"}, "server.hostname: must be a host name"),
    # Values that passed the loader and then failed the server with a traceback, or silently misbehaved.
    ("[smtp]\nidle_timeout = inf\n", {}, "smtp.idle_timeout: must be a finite number"),
    ("[server]\nshutdown_grace = nan\n", {}, "server.shutdown_grace: must be a finite number"),
    ("", {"MAILSERVER_DATABASE__COMMAND_TIMEOUT": "inf"}, "database.command_timeout: must be a finite"),
    ("[queue]\nworkers = 99999999999999999999999\n", {}, "queue.workers: must be between"),
    ("", {"MAILSERVER_DATABASE__POOL_MIN": "99999999999999999999"}, "database.pool_min: must be between"),
    ("[database]\npool_min = 10\npool_max = 2\n", {}, "database.pool_min: must not exceed pool_max"),
    ("[database]\ndsn = \"notadsn\"\n", {}, "database.dsn: must be a URL starting postgresql://"),
    ("[database]\ndsn = \"http://db.example/x\"\n", {}, "database.dsn: must be a URL starting"),
    ("", {"MAILSERVER_DATABASE__DSN": "postgresql://u:pw@[::1:5432/mail"}, "database.dsn: not a valid URL"),
    ("", {"MAILSERVER_DATABASE__DSN": "postgresql://db.example:abc/mail"}, "database.dsn: port must be 1-65535"),
    ("", {"MAILSERVER_DATABASE__DSN": "postgresql://a.example,b.example:0/mail"}, "database.dsn: port must be"),
    ("", {"MAILSERVER_DATABASE__DSN": "postgresql://db.example/mail?sslmode=on"}, "database.dsn: sslmode must"),
    ("[redis]\nurl = \"localhost:6379\"\n", {}, "redis.url: must be a URL starting redis://"),
    ("[smtp.mx]\naddress = \"mail.example\"\n", {}, "smtp.mx.address: must be an IP address"),
    ("", {"MAILSERVER_HTTP__LISTENER__ADDRESS": "localhost"}, "http.listener.address: must be an IP"),
    ("[dns]\nnameservers = [\"ns.example\"]\n", {}, "dns.nameservers: not an IP address"),
    ("[dns]\nport = 0\n", {}, "dns.port: must be 1-65535"),
    ("[queue]\nmx_port = 0\n", {}, "queue.mx_port: must be 1-65535"),
    ("[server]\npostmaster = \"postmaster\"\n", {}, "server.postmaster: must be an address"),
    ("[server]\nhostname = \"mäil.example\"\n", {}, "server.hostname: must be an ASCII host name"),
    ("[server]\nhostname = \"mail_1.example\"\n", {}, "server.hostname: must be a host name"),
    ("[server]\nhostname = \"a\\u0001b.example\"\n", {}, "server.hostname: must be a host name"),
    (f"[server]\nhostname = \"{'a' * 64}.example\"\n", {}, "server.hostname: must be a host name"),
    ("", {"MAILSERVER_SMTP_MX_PORT": "2525"}, "MAILSERVER_SMTP_MX_PORT: unknown setting"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, text), environ=env)
    assert message in str(info.value)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[server]\nhostname = \"mx.example\"\n")
    assert load_settings(path).server.hostname == "mx.example"


def test_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[server]\nhostname = \"caf\xe9\"\n")
    with pytest.raises(ConfigError, match="not UTF-8 \\(byte 0xe9 on line 2\\)"):
        load_settings(path)


def test_top_level_setting_from_environment() -> None:
    """MAILSERVER_DEV is the documented override of `dev`; other MAILSERVER_ names are not overrides."""
    s = load_settings(environ={"MAILSERVER_DEV": "true", "MAILSERVER_CONFIG": "/x", "MAILSERVER_TEST_DSN": "y"})
    assert s.dev is True


def test_good_addresses_and_urls_load() -> None:
    s = load_settings(environ={"MAILSERVER_SMTP__MX__ADDRESS": "::", "MAILSERVER_DNS__NAMESERVERS": '["::1"]',
                               "MAILSERVER_DATABASE__DSN": "postgres://u:p@[::1]:5433,db.example/mail?sslmode=require",
                               "MAILSERVER_REDIS__URL": "unix:///run/redis.sock",
                               "MAILSERVER_SERVER__POSTMASTER": "root@example.test",
                               "MAILSERVER_SERVER__HOSTNAME": "xn--mil-ula.example."})
    assert s.smtp.mx.address == "::" and s.dns.nameservers == ["::1"]


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings("/nonexistent/mailserver.toml")


def test_every_setting_is_documented_in_the_reference() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text()
    for key, _default, doc in iter_documented():
        assert doc, f"{key} has no documentation"
        assert f"`{key}`" in reference, f"{key} missing from docs/configuration.md"
