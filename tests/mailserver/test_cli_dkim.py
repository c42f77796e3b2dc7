"""`mailserver dkim generate|show` and `mailserver dns`: real processes on a real database; the printed
records are checked by using them (a message signed with the stored key verifies against the printed
TXT value)."""

from __future__ import annotations

import asyncio
import re

import asyncpg
import dkim as dkimpy
import pytest

from mailcore.auth.dkim import sign_message
from mailcore.lineends import normalize_crlf
from mailcore.mtasts import published
from storage import dkim_keys
from tests.mailserver.test_cli import run

MESSAGE = normalize_crlf(b"From: a@example.test\nTo: b@far.example\nSubject: s\n\nbody\n")


def zone_txt(output: str, name: str) -> str:
    """The TXT value of `name` in zone-file lines: its character-strings joined (RFC 6376 §3.6.2.2)."""
    (line,) = [ln for ln in output.splitlines() if ln.startswith(name + ".\t")]
    _, ttl, klass, rtype, data = line.split("\t", 4)
    assert (ttl, klass, rtype) == ("3600", "IN", "TXT")
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', data)
    assert all(len(s) <= 255 for s in strings)
    return "".join(strings)


def verifies(pem: str, algorithm: str, selector: str, txt: str) -> bool:
    signed = sign_message(MESSAGE, "example.test", selector, pem, algorithm) + MESSAGE
    expected = f"{selector}._domainkey.example.test.".encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == expected
        return txt.encode()

    return dkimpy.verify(signed, dnsfunc=dnsfunc)


async def stored(db_dsn: str) -> list[dkim_keys.DKIMKey]:
    conn = await asyncpg.connect(db_dsn)
    try:
        return await dkim_keys.list_keys(conn, "example.test")
    finally:
        await conn.close()


@pytest.mark.parametrize(("algorithm", "full"), [("rsa", "rsa-sha256"), ("ed25519", "ed25519-sha256")])
def test_generate_prints_the_record_that_verifies(db_dsn: str, algorithm: str, full: str) -> None:
    assert run(db_dsn, "domain", "add", "example.test").returncode == 0
    r = run(db_dsn, "dkim", "generate", "example.test", "--selector", "s1", "--algorithm", algorithm)
    assert r.returncode == 0, r.stderr
    name = "s1._domainkey.example.test"
    (value,) = re.findall(r"^  value: (.*)$", r.stdout, re.M)
    assert f"  name:  {name}\n" in r.stdout and zone_txt(r.stdout, name) == value
    assert value.startswith(f"v=DKIM1; k={algorithm}; p=")
    (key,) = asyncio.run(stored(db_dsn))
    assert (key.selector, key.algorithm) == ("s1", full)
    assert verifies(key.private_key, full, "s1", value)
    assert ("ed25519 signatures" in r.stdout) == (algorithm == "ed25519")


def test_rsa_is_2048_bits_by_default_and_show_lists_newest_first(db_dsn: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert run(db_dsn, "domain", "add", "example.test").returncode == 0
    assert run(db_dsn, "dkim", "generate", "example.test", "--selector", "old").returncode == 0
    first = run(db_dsn, "dkim", "generate", "example.test")
    assert first.returncode == 0
    (selector,) = re.findall(r"DKIM key (rsa\d{8}) \(rsa-sha256\)", first.stdout)
    keys = asyncio.run(stored(db_dsn))
    assert [k.selector for k in keys] == [selector, "old"]
    assert load_pem_private_key(keys[0].private_key.encode(), None).key_size == 2048
    show = run(db_dsn, "dkim", "show", "example.test")
    assert show.returncode == 0
    lines = show.stdout.splitlines()
    assert lines[0].startswith(f"{selector}._domainkey.example.test\trsa-sha256\tcreated ")
    assert lines[0].endswith("\tsigning") and "not signing" in show.stdout
    assert zone_txt(show.stdout, f"{selector}._domainkey.example.test") in first.stdout


def test_dns_prints_every_record(db_dsn: str) -> None:
    assert run(db_dsn, "domain", "add", "example.test").returncode == 0
    env = {"MAILSERVER_SERVER__HOSTNAME": "mail.example.test"}
    before = run(db_dsn, "dns", "example.test", env=env)
    assert before.returncode == 0 and "no key yet. Run: mailserver dkim generate example.test" in before.stdout
    assert run(db_dsn, "dkim", "generate", "example.test", "--selector", "k1").returncode == 0
    r = run(db_dsn, "dns", "example.test", env=env)
    assert r.returncode == 0, r.stderr
    records = [ln for ln in r.stdout.splitlines() if not ln.startswith(";")]
    assert records[0] == "example.test.\t3600\tIN\tMX\t10 mail.example.test."
    assert records[1] == 'example.test.\t3600\tIN\tTXT\t"v=spf1 mx -all"'
    assert records[2].startswith("k1._domainkey.example.test.\t3600\tIN\tTXT\t\"v=DKIM1; k=rsa; p=")
    assert records[3] == ('_dmarc.example.test.\t3600\tIN\tTXT\t'
                          '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.test"')
    assert "MTA-STS" in r.stdout and "TLS-RPT" in r.stdout
    # MTA-STS (server.mta_sts_mode testing by default): the policy's host, its id, TLS-RPT
    _, policy_id = published("testing", ["mail.example.test"])
    assert records[4:7] == [
        "mta-sts.example.test.\t3600\tIN\tCNAME\tmail.example.test.",
        f'_mta-sts.example.test.\t3600\tIN\tTXT\t"v=STSv1; id={policy_id}"',
        '_smtp._tls.example.test.\t3600\tIN\tTXT\t"v=TLSRPTv1; rua=mailto:postmaster@example.test"',
    ]
    # What makes autoconfig reachable: the autoconfig/autodiscover names and RFC 6186 SRV records.
    assert records[7:] == [
        "autoconfig.example.test.\t3600\tIN\tCNAME\tmail.example.test.",
        "autodiscover.example.test.\t3600\tIN\tCNAME\tmail.example.test.",
        "_autodiscover._tcp.example.test.\t3600\tIN\tSRV\t0 1 443 mail.example.test.",
        "_imaps._tcp.example.test.\t3600\tIN\tSRV\t0 1 993 mail.example.test.",
        "_imap._tcp.example.test.\t3600\tIN\tSRV\t10 1 143 mail.example.test.",
        "_submissions._tcp.example.test.\t3600\tIN\tSRV\t0 1 465 mail.example.test.",
        "_submission._tcp.example.test.\t3600\tIN\tSRV\t10 1 587 mail.example.test.",
    ]
    assert r.stderr == ""
    assert "not a public name" in run(db_dsn, "dns", "example.test").stderr  # default hostname: localhost
    # A listener that is off is published as not offered (RFC 6186 §4: target ".").
    off = run(db_dsn, "dns", "example.test", env={**env, "MAILSERVER_IMAP__IMAP__ENABLED": "false"})
    assert "_imap._tcp.example.test.\t3600\tIN\tSRV\t0 0 0 ." in off.stdout.splitlines()


@pytest.mark.parametrize(("args", "code", "message"), [
    (("dkim", "generate", "nowhere.test"), 1, "unknown domain: nowhere.test"),
    (("dkim", "generate", "example.test", "--selector", "dup"), 1, "already has a key"),
    (("dkim", "generate", "example.test", "--selector", "bad selector"), 1, "invalid selector"),
    (("dkim", "generate", "example.test", "--algorithm", "dsa"), 2, "invalid choice"),
    (("dkim", "show", "example.test"), 1, "no DKIM key for example.test"),
    (("dkim", "show", "nowhere.test"), 1, "unknown domain"),
    (("dns", "nowhere.test"), 1, "unknown domain"),
    (("dkim",), 2, "required"),
])
def test_refusals(db_dsn: str, args: tuple[str, ...], code: int, message: str) -> None:
    assert run(db_dsn, "domain", "add", "example.test").returncode == 0
    if "dup" in args:
        assert run(db_dsn, *args).returncode == 0
    r = run(db_dsn, *args)
    assert r.returncode == code and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("selector", ["a" * 64, "a..b", ("x" * 60 + ".") * 4 + "x"])
def test_selectors_that_cannot_be_published_are_refused(db_dsn: str, selector: str) -> None:
    """A 64-octet label or an empty one was stored (exit 0), and its DNS record could never be published."""
    assert run(db_dsn, "domain", "add", "example.test").returncode == 0
    r = run(db_dsn, "dkim", "generate", "example.test", "--selector", selector)
    assert r.returncode == 1 and "invalid selector" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "no DKIM key for example.test" in run(db_dsn, "dkim", "show", "example.test").stderr
