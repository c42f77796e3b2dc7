"""DKIM across implementations and across instances, end to end over real listeners, with every key served
by the loopback test DNS server:

- OpenDKIM signs (libopendkim itself, rsa-sha256; and the `opendkim-testmsg` tool, which can only make
  rsa-sha1) and our MX verifies;
- a message submitted on 587 to one `mailserver serve` process is signed by its queue and delivered to a
  second process (another database) whose MX verifies it;
- issue 5: the same submission delivered to a sink verifies with dkimpy.
"""

from __future__ import annotations

import asyncio
import ctypes
import email
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosmtplib
import asyncpg
import dkim as dkimpy
import dns.resolver
import pytest

from config.settings import DNSSettings
from mailcore import replies
from mailcore.auth.dkim import generate_key
from mailcore.auth.dmarc import OrganizationalDomains
from mailcore.dns.resolver import Resolver
from mailcore.passwords import hash_password_sync
from smtp_in.senderauth import SenderAuthentication
from storage import accounts, dkim_keys
from tests.dnsserver import DNSTestServer
from tests.pg import PgServer
from tests.server_process import ServerProcess
from tests.sinks import Sink
from tests.smtp_in.harness import HOSTNAME, USER, Server, make_settings, seed, start_server
from tests.smtp_in.test_mx import code, inbox
from tests.smtp_out.conftest import until

PASSWORD = "submission-password"


def records_from_genkey(txt_file: Path) -> str:
    """The TXT value from an `opendkim-genkey` .txt file (a zone line of quoted strings)."""
    return "".join(re.findall(r'"([^"]*)"', txt_file.read_text()))


def our_results(stored: bytes, authserv_id: str) -> str:
    values = [" ".join(str(v).split()) for v in email.message_from_bytes(stored).get_all("Authentication-Results")]
    (ours,) = [v for v in values if v.startswith(authserv_id + ";")]
    return ours


# --- OpenDKIM -> our MX ---------------------------------------------------------------------------------

class LibOpenDKIM:
    """Signing with libopendkim (the library under opendkim and opendkim-testmsg) through ctypes, so the
    algorithm can be chosen: the tool hard-codes rsa-sha1."""

    RSA_SHA256, CANON_SIMPLE, CANON_RELAXED = 1, 0, 1  # dkim.h: DKIM_SIGN_RSASHA256, DKIM_CANON_*

    def __init__(self) -> None:
        lib = ctypes.CDLL("libopendkim.so.11")  # Debian's libopendkim11, a dependency of opendkim-tools
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        lib.dkim_init.restype, lib.dkim_init.argtypes = vp, [vp, vp]
        lib.dkim_sign.restype = vp
        lib.dkim_sign.argtypes = [vp, cp, vp, cp, cp, cp, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_ssize_t, ctypes.POINTER(ctypes.c_int)]
        lib.dkim_chunk.argtypes = [vp, cp, ctypes.c_size_t]
        lib.dkim_eom.argtypes = [vp, ctypes.POINTER(ctypes.c_bool)]
        lib.dkim_getsighdr_d.argtypes = [vp, ctypes.c_size_t, ctypes.POINTER(cp), ctypes.POINTER(ctypes.c_size_t)]
        lib.dkim_free.argtypes = lib.dkim_close.argtypes = [vp]
        self.lib = lib

    def sign(self, message: bytes, domain: str, selector: str, key_pem: bytes) -> bytes:
        """The DKIM-Signature header field (CRLF line ends) for `message` (CRLF), relaxed/simple."""
        lib = self.lib
        handle = lib.dkim_init(None, None)
        status = ctypes.c_int()
        job = lib.dkim_sign(handle, b"interop", None, key_pem, selector.encode(), domain.encode(),
                            self.CANON_RELAXED, self.CANON_SIMPLE, self.RSA_SHA256, -1, ctypes.byref(status))
        try:
            assert job, f"dkim_sign failed: {status.value}"
            assert lib.dkim_chunk(job, message, len(message)) == 0
            assert lib.dkim_chunk(job, None, 0) == 0
            assert lib.dkim_eom(job, ctypes.byref(ctypes.c_bool())) == 0
            header, length = ctypes.c_char_p(), ctypes.c_size_t()
            prefix = b"DKIM-Signature: "
            assert lib.dkim_getsighdr_d(job, len(prefix), ctypes.byref(header), ctypes.byref(length)) == 0
            assert header.value is not None
            return re.sub(rb"\r?\n", b"\r\n", prefix + header.value) + b"\r\n"
        finally:
            if job:
                lib.dkim_free(job)
            lib.dkim_close(handle)


@pytest.fixture(scope="module")
def opendkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """(private key PEM, TXT value) made by opendkim-genkey for sel1._domainkey.od.example."""
    folder = tmp_path_factory.mktemp("opendkim")
    subprocess.run(["opendkim-genkey", "-b", "2048", "-d", "od.example", "-s", "sel1", "-D", str(folder)],
                   check=True, timeout=60)
    return (folder / "sel1.private").read_bytes(), records_from_genkey(folder / "sel1.txt")


@pytest.fixture
async def od_mx(pool: asyncpg.Pool, tmp_path: Path,
                opendkim_key: tuple[bytes, str]) -> AsyncIterator[Server]:
    """Our MX (DMARC enforced) whose DNS has OpenDKIM's key; od.example's SPF fails loopback on purpose
    and its DMARC says p=reject, so only a DKIM pass gets its mail in."""
    await seed(pool)
    zone = {"sel1._domainkey.od.example": {"TXT": [opendkim_key[1]]},
            "od.example": {"TXT": ["v=spf1 -all"]},
            "_dmarc.od.example": {"TXT": ["v=DMARC1; p=reject"]}}
    with DNSTestServer(zone) as server:
        base = make_settings(tmp_path)
        settings = replace(base, auth=replace(base.auth, enforce=True),
                           dns=DNSSettings(nameservers=[server.host], port=server.port, timeout=0.5))
        auth = SenderAuthentication(Resolver(settings.dns), HOSTNAME, settings.auth, dns_timeout=0.5,
                                    org=OrganizationalDomains())
        mx = await start_server(pool, settings, None, sender_auth=auth)
        yield mx
        await mx.stop()


OD_MESSAGE = (b"From: Olga <olga@od.example>\r\nTo: user@local.example\r\nSubject: from OpenDKIM\r\n"
              b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <od-1@od.example>\r\n\r\n"
              b"Signed by OpenDKIM.\r\n  Trailing spaces and a long line follow:    \r\n" + b"x" * 900 + b"\r\n")


async def send(mx: Server, raw: bytes) -> tuple[int, str]:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mx.port("mx"), start_tls=False, timeout=10,
                             local_hostname="relay.od.example")
    await client.connect()
    try:
        await client.sendmail("olga@od.example", [USER], raw)
        return 250, "2.0.0"
    except aiosmtplib.SMTPDataError as exc:
        return exc.code, exc.message.split(" ")[0]
    finally:
        await client.quit()


async def test_libopendkim_rsa_sha256_signature_passes_our_mx(od_mx: Server,
                                                              opendkim_key: tuple[bytes, str]) -> None:
    header = LibOpenDKIM().sign(OD_MESSAGE, "od.example", "sel1", opendkim_key[0])
    assert header.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=od.example; s=sel1;")
    assert await send(od_mx, header + OD_MESSAGE) == (250, "2.0.0")
    (stored,) = await inbox(od_mx.pool, USER)
    results = our_results(stored, HOSTNAME)
    assert "dkim=pass header.d=od.example header.s=sel1 header.a=rsa-sha256" in results
    assert "spf=fail" in results and "dmarc=pass (p=reject) header.from=od.example" in results


async def test_opendkim_testmsg_signature_is_rsa_sha1_which_we_refuse(od_mx: Server, tmp_path: Path,
                                                                      opendkim_key: tuple[bytes, str]) -> None:
    key_file = tmp_path / "sel1.private"
    key_file.write_bytes(opendkim_key[0])
    # -C keeps CRLF (without it the tool's CR removal leaves stray bytes after b=); the tool always
    # signs rsa-sha1, relaxed/simple (DKIM_SIGN_RSASHA1 is hard-coded in opendkim-testmsg.c).
    done = await asyncio.to_thread(
        subprocess.run, ["opendkim-testmsg", "-C", "-d", "od.example", "-s", "sel1", "-k", str(key_file)],
        input=OD_MESSAGE, capture_output=True, check=True, timeout=30)
    out = done.stdout
    assert out.startswith(b"DKIM-Signature: v=1; a=rsa-sha1; c=relaxed/simple; d=od.example; s=sel1;")
    assert out.endswith(OD_MESSAGE)
    # The signature itself is sound: dkimpy alone (which still accepts rsa-sha1) verifies it ...
    assert dkimpy.verify(out, dnsfunc=lambda name, timeout=5: opendkim_key[1].encode())
    # ... but RFC 8301 §3.1 forbids verifying rsa-sha1, so without a DKIM pass od.example's p=reject holds.
    assert await send(od_mx, out) == code(replies.DMARC_REJECTED)


# --- our queue -> a second instance of our MX, and -> a sink (issue 5) -----------------------------------

SENDER_DOMAIN = "sender.example"
SENDER = f"alice@{SENDER_DOMAIN}"
SELECTOR = "k2026"
PEM, TXT = generate_key("rsa", 2048)


@pytest.fixture(scope="module")
def zone_dns() -> Iterator[DNSTestServer]:
    """Our sender's SPF, DKIM key and DMARC; MX records for the remote domains (filled in by tests)."""
    zone: dict[str, dict[str, Any]] = {
        SENDER_DOMAIN: {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
        f"{SELECTOR}._domainkey.{SENDER_DOMAIN}": {"TXT": [TXT]},
        f"_dmarc.{SENDER_DOMAIN}": {"TXT": ["v=DMARC1; p=reject"]},
        "b.example": {"MX": [(10, "mx.b.example.")]},
        "far.example": {"MX": [(10, "mx.far.example.")]},
        "mx.b.example": {"A": ["127.0.0.1"]},
        "mx.far.example": {"A": ["127.0.0.1"]},
    }
    with DNSTestServer(zone) as server:
        yield server


def dns_env(server: DNSTestServer) -> dict[str, str]:
    return {"MAILSERVER_DNS__NAMESERVERS": '["127.0.0.1"]', "MAILSERVER_DNS__PORT": str(server.port),
            "MAILSERVER_DNS__TIMEOUT": "1.0"}


async def prepare_sender(dsn: str) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await accounts.add_domain(pool, SENDER_DOMAIN)
        await accounts.add_account(pool, SENDER, hash_password_sync(PASSWORD))
        await dkim_keys.add_key(pool, SENDER_DOMAIN, SELECTOR, PEM, "rsa-sha256")
    finally:
        await pool.close()


async def start_sender(dsn: str, data_dir: Path, dns_server: DNSTestServer, mx_port: int) -> ServerProcess:
    """Instance A: `mailserver serve` with submission (plaintext AUTH on loopback) and its queue, which
    finds remote MX hosts through the test DNS server and connects to them on `mx_port`."""
    await prepare_sender(dsn)
    proc = ServerProcess(dsn, data_dir, listeners=["smtp.submission"], env={
        **dns_env(dns_server), "MAILSERVER_SMTP__ALLOW_PLAINTEXT_AUTH": "true",
        "MAILSERVER_QUEUE__MX_PORT": str(mx_port), "MAILSERVER_QUEUE__POLL_INTERVAL": "0.5",
        "MAILSERVER_SERVER__HOSTNAME": f"mail.{SENDER_DOMAIN}"})
    await proc.start()
    return proc


async def submit(proc: ServerProcess, rcpt: str, subject: str) -> bytes:
    raw = (f"From: Alice <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n\r\n"
           "Sent through submission, signed by our queue.\r\n").encode()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=proc.ports["smtp.submission"], start_tls=False,
                             timeout=10, local_hostname="laptop.example")
    await client.connect()
    await client.login(SENDER, PASSWORD)
    errors, _ = await client.sendmail(SENDER, [rcpt], raw)
    await client.quit()
    assert errors == {}
    return raw


async def test_signed_by_our_queue_passes_a_second_instance(db_dsn: str, test_postgres: PgServer, tmp_path: Path,
                                                            zone_dns: DNSTestServer) -> None:
    # Instance B: another `mailserver serve` on another database, the MX for b.example.
    dsn_b = await test_postgres.new_database()
    pool_b = await asyncpg.create_pool(dsn_b, min_size=1, max_size=2)
    try:
        await accounts.add_domain(pool_b, "b.example")
        await accounts.add_account(pool_b, "bob@b.example", hash_password_sync(PASSWORD))
    finally:
        await pool_b.close()
    b = ServerProcess(dsn_b, tmp_path / "b", listeners=["smtp.mx"],
                      env={**dns_env(zone_dns), "MAILSERVER_SERVER__HOSTNAME": "mx.b.example"})
    await b.start()
    a = None
    try:
        a = await start_sender(db_dsn, tmp_path / "a", zone_dns, b.ports["smtp.mx"])
        await submit(a, "bob@b.example", "across instances")
        pool_b = await asyncpg.create_pool(dsn_b, min_size=1, max_size=2)
        try:
            async def arrived() -> list[bytes]:
                return await inbox(pool_b, "bob@b.example")

            await until(arrived, 30)
            (stored,) = await arrived()
        finally:
            await pool_b.close()
    finally:
        if a is not None:
            await a.stop()
        await b.stop()
    results = our_results(stored, "mx.b.example")
    assert (f"dkim=pass header.d={SENDER_DOMAIN} header.i=@{SENDER_DOMAIN} header.s={SELECTOR}"
            " header.a=rsa-sha256") in results, results
    assert "spf=pass" in results and f"dmarc=pass (p=reject) header.from={SENDER_DOMAIN}" in results
    assert stored.index(b"Authentication-Results: mx.b.example") < stored.index(b"DKIM-Signature:")


async def test_submission_arrives_signed_at_a_sink_and_dkimpy_verifies(db_dsn: str, tmp_path: Path,
                                                                      zone_dns: DNSTestServer) -> None:
    sink = await Sink().start()
    a = None
    try:
        a = await start_sender(db_dsn, tmp_path / "a", zone_dns, sink.port)
        sent = await submit(a, "carol@far.example", "to the sink")
        await until(lambda: sink.received, 30)
    finally:
        if a is not None:
            await a.stop()
        await sink.stop()
    (got,) = sink.received
    assert got.mail_from == SENDER and got.rcpt_tos == ["carol@far.example"]
    assert got.data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.example;")
    assert got.data.endswith(sent)

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [zone_dns.host], zone_dns.port

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        return b"".join(answer[0].strings)

    assert await asyncio.to_thread(dkimpy.verify, got.data, dnsfunc=dnsfunc)
