"""End to end with real clients against the real listener on loopback: imaplib, imapclient, curl,
mbsync and neomutt. Blocking clients run in a thread; the server runs in the test's event loop."""

from __future__ import annotations

import asyncio
import email
import imaplib
import shutil
import ssl
import subprocess
from pathlib import Path

import imapclient
import imapclient.imapclient
import pytest

from tests.imap.conftest import PASSWORD, USER, Listening, message

ATTACHED = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\nSubject: with attachment\r\n"
    b"Message-ID: <att@example.org>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
    b'--b1\r\nContent-Type: application/pdf; name="r\xc3\xa9sum\xc3\xa9.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
)


def need(tool: str) -> None:
    if shutil.which(tool) is None:  # tests/run.sh installs it; fail loudly rather than skip silently
        pytest.fail(f"{tool} is not installed (apt-get install {tool})")


async def test_imaplib(listening: Listening) -> None:
    await listening.world.deliver(message(1, "first"))
    await listening.world.deliver(ATTACHED)

    def run() -> None:
        ctx = ssl.create_default_context(cafile=listening.ca_file)
        m = imaplib.IMAP4("127.0.0.1", listening.imap_port)
        m.starttls(ctx)
        m.login(USER, PASSWORD)
        typ, data = m.list()
        assert typ == "OK" and any(b'"/" Sent' in d for d in data)
        typ, data = m.select("INBOX")
        assert data == [b"2"]
        typ, data = m.search(None, "SUBJECT", "attachment")
        assert data == [b"2"]
        typ, data = m.fetch("2", "(BODY.PEEK[2] BODYSTRUCTURE)")
        assert data[0][1] == b"JVBERi0xLjQK"
        typ, data = m.fetch("1", "(RFC822)")
        assert email.message_from_bytes(data[0][1])["Subject"] == "first"
        typ, data = m.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
        assert typ == "OK"
        typ, data = m.append("Drafts", "(\\Draft)", None, message(3, "draft"))
        assert typ == "OK" and b"APPENDUID" in data[0]
        typ, data = m.uid("COPY", "1:2", "Archive")
        assert typ == "OK" and m.response("COPYUID")[1][0].endswith(b" 1:2 1:2")
        m.store("1", "+FLAGS", "\\Deleted")
        typ, data = m.expunge()
        assert data == [b"1"]
        m.logout()

    await asyncio.to_thread(run)


async def test_imapclient(listening: Listening) -> None:
    await listening.world.deliver(message(1, "hello"))

    def run() -> None:
        ctx = ssl.create_default_context(cafile=listening.ca_file)
        ctx.check_hostname = False
        with imapclient.IMAPClient("127.0.0.1", port=listening.imaps_port, ssl=True, ssl_context=ctx) as c:
            c.login(USER, PASSWORD)
            assert b"MOVE" in c.capabilities() and b"IDLE" in c.capabilities()
            folders = {f[2]: f[0] for f in c.list_folders()}
            assert b"\\Trash" in folders["Trash"]
            assert c.find_special_folder(imapclient.imapclient.SENT) == "Sent"
            c.select_folder("INBOX")
            msgs = c.search(["FROM", "bob1"])
            assert msgs == [1]
            env = c.fetch(msgs, ["ENVELOPE", "FLAGS"])[1][b"ENVELOPE"]
            assert env.subject == b"hello" and env.from_[0].mailbox == b"bob1"
            c.add_flags(msgs, [imapclient.imapclient.SEEN])
            assert imapclient.imapclient.SEEN in c.get_flags(msgs)[1]
            c.move(msgs, "Trash")
            assert c.folder_status("Trash", ["MESSAGES"])[b"MESSAGES"] == 1
            c.idle()
            c.idle_done()
            c.create_folder("Work/2026")
            c.rename_folder("Work", "Job")
            assert c.folder_exists("Job/2026")

    await asyncio.to_thread(run)


async def test_curl(listening: Listening) -> None:
    need("curl")
    await listening.world.deliver(message(1, "curl me", body="curl body line\r\n"))
    base = f"imap://127.0.0.1:{listening.imap_port}"
    auth = ["--user", f"{USER}:{PASSWORD}", "--ssl-reqd", "--cacert", listening.ca_file, "--resolve",
            f"localhost:{listening.imap_port}:127.0.0.1"]
    base = f"imap://localhost:{listening.imap_port}"

    async def curl(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec("curl", "-sS", "--max-time", "20", *auth, *args,
                                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    listing = await curl(base + "/")
    assert '"/" INBOX' in listing and '"/" Sent' in listing
    assert "* SEARCH 1" in await curl(base + "/INBOX", "-X", "SEARCH SUBJECT curl")
    fetched = await curl(base + "/INBOX/;UID=1")
    assert "Subject: curl me" in fetched and "curl body line" in fetched


def run_in_pty(argv: list[str], env: dict[str, str], deadline: float) -> tuple[int | None, bytes]:
    """Run a full-screen program on a pseudo-terminal (neomutt needs one), draining its output."""
    import os
    import pty
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b""
    end = time.monotonic() + deadline
    try:
        while time.monotonic() < end and proc.poll() is None:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    out += os.read(master, 65536)
                except OSError:
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    return proc.returncode, out


async def test_neomutt_reads_a_message(listening: Listening, tmp_path: Path) -> None:
    need("neomutt")
    await listening.world.deliver(message(1, "for neomutt", body="neomutt can read this\r\n"))
    saved = tmp_path / "saved.txt"
    muttrc = tmp_path / "muttrc"
    # plain text on loopback (allowed by the test settings, as by --dev); TLS is covered by the other clients
    muttrc.write_text(
        f'set folder="imap://{USER}@127.0.0.1:{listening.imap_port}/"\n'
        f'set imap_pass="{PASSWORD}"\nset spoolfile="+INBOX"\nset ssl_starttls=no\nset ssl_force_tls=no\n'
        'set header_cache=""\nset message_cachedir=""\nset quit=yes\nset wait_key=no\nset mail_check=0\n'
        'set imap_idle=no\nset pipe_decode=no\n')
    env = {"HOME": str(tmp_path), "TERM": "xterm", "PATH": "/usr/bin:/bin"}
    argv = ["neomutt", "-n", "-F", str(muttrc), "-f", "+INBOX",
            "-e", f"push '<pipe-message>cat > {saved}<enter><quit>'"]
    code, screen = await asyncio.to_thread(run_in_pty, argv, env, 30)
    assert saved.exists(), screen[-2000:]
    text = saved.read_text()
    assert "Subject: for neomutt" in text and "neomutt can read this" in text
    assert code == 0


async def test_mbsync_syncs_1000_messages_and_local_changes_flow_back(listening: Listening,
                                                                      tmp_path: Path) -> None:
    need("mbsync")
    world = listening.world
    raws = [message(i, f"bulk {i}", body=f"message number {i}\r\n") for i in range(1, 1001)]
    for start in range(0, 1000, 50):
        await asyncio.gather(*(world.deliver(r) for r in raws[start : start + 50]))
    maildir = tmp_path / "mail"
    maildir.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount test\nHost 127.0.0.1\nPort {listening.imap_port}\nUser {USER}\nPass \"{PASSWORD}\"\n"
        f"SSLType STARTTLS\nCertificateFile {listening.ca_file}\nAuthMechs PLAIN\n\n"
        "IMAPStore remote\nAccount test\n\n"
        f"MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\nSubFolders Verbatim\n\n"
        "Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Both\nExpunge Both\n"
        "SyncState *\nSync All\n")

    async def mbsync() -> str:
        proc = await asyncio.create_subprocess_exec("mbsync", "-c", str(rc), "sync", stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, env={"HOME": str(tmp_path)})
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, (out + err).decode()[-3000:]
        return (out + err).decode()

    await mbsync()
    files = sorted((maildir / "INBOX" / "new").iterdir()) + sorted((maildir / "INBOX" / "cur").iterdir())
    assert len(files) == 1000
    by_subject = {}
    for f in files:
        for line in f.read_bytes().splitlines():
            if line.startswith(b"Subject: "):
                by_subject[line[9:].decode()] = f
                break
    assert "bulk 1" in by_subject and "bulk 1000" in by_subject
    # locally: flag "bulk 7", delete "bulk 9"
    flagged = by_subject["bulk 7"]
    cur = maildir / "INBOX" / "cur"
    base = flagged.name.split(":2,")[0]
    flagged.rename(cur / f"{base}:2,F")
    by_subject["bulk 9"].unlink()
    await mbsync()
    rows = await world.pool.fetch(
        "SELECT m.subject, mm.flags FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id"
        " JOIN mailboxes b ON b.id = mm.mailbox_id WHERE b.name = 'INBOX'")
    state = {r["subject"]: list(r["flags"]) for r in rows}
    assert "\\Flagged" in state["bulk 7"]
    assert "bulk 9" not in state and len(state) == 999
