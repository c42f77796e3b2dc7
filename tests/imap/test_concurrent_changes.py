"""Two sessions of one account over real sockets (imaplib): what one session sees when another has
expunged messages it still holds in its view, deleted its selected mailbox, or renamed it.

imaplib is blocking: each scenario runs in a thread; the server runs in the test's event loop."""

from __future__ import annotations

import asyncio
import imaplib
import time
from collections.abc import Callable

import pytest

from imap import fetch
from tests.hangguard import no_hang
from tests.imap.conftest import PASSWORD, USER, Listening, World, message

BYE_DELETED = b"Selected mailbox was deleted, have to disconnect."


def login(listening: Listening) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", listening.imap_port)  # plain text from loopback (tests' settings)
    m.login(USER, PASSWORD)
    return m


def count(m: imaplib.IMAP4, mailbox: str) -> int:
    typ, data = m.status(mailbox, "(MESSAGES)")
    assert typ == "OK", data
    return int(data[0].split(b"MESSAGES ")[1].rstrip(b")"))


def expunge_elsewhere(listening: Listening, seq: str, mailbox: str = "INBOX") -> None:
    """Another session marks `seq` \\Deleted and expunges it."""
    b = login(listening)
    b.select(mailbox)
    b.store(seq, "+FLAGS.SILENT", "(\\Deleted)")
    assert b.expunge()[0] == "OK"
    b.logout()


def stale_view(listening: Listening, seq: str = "2") -> imaplib.IMAP4:
    """A session with INBOX selected, whose message `seq` another session has expunged since (this one
    has not been told yet)."""
    a = login(listening)
    a.select("INBOX")
    expunge_elsewhere(listening, seq)
    return a


async def deliver(listening: Listening, n: int, mailbox: str = "INBOX") -> None:
    for i in range(1, n + 1):
        await listening.world.deliver(message(i), mailbox)


# --- messages expunged by another session, still in this session's view -----------------------------------

@pytest.mark.parametrize("command,uid", [("COPY", False), ("COPY", True), ("MOVE", False), ("MOVE", True)])
async def test_copy_naming_a_message_expunged_elsewhere_copies_none(listening: Listening, command: str,
                                                                    uid: bool) -> None:
    """RFC 9051 §6.4.7 (a failed COPY leaves the destination as it was) and Dovecot's cmd-copy.c: when some
    of the requested messages no longer exist, nothing is copied (nor moved), the answer is
    NO [EXPUNGEISSUED], and the expunges are announced, so the client can try again with the others."""
    await deliver(listening, 3)

    def run() -> None:
        a = stale_view(listening)
        typ, data = a.uid(command, "1:3", "Archive") if uid else a._simple_command(command, "1:3", "Archive")
        assert typ == "NO" and data[0].startswith(b"[EXPUNGEISSUED]"), (typ, data)
        assert a.response("EXPUNGE") == ("EXPUNGE", [b"2"])
        assert count(a, "Archive") == 0 and count(a, "INBOX") == 2
        # the client, told, asks again for what is left: all of it is copied
        typ, data = a.uid(command, "1:3", "Archive") if uid else a._simple_command(command, "1:2", "Archive")
        assert typ == "OK", (typ, data)
        assert a.response("COPYUID")[1][0].endswith(b" 1,3 1:2")
        assert count(a, "Archive") == 2 and count(a, "INBOX") == (0 if command == "MOVE" else 2)
        a.logout()

    await asyncio.to_thread(run)


async def test_copy_of_only_expunged_messages_is_refused(listening: Listening) -> None:
    await deliver(listening, 2)

    def run() -> None:
        a = stale_view(listening)
        typ, data = a.copy("2", "Archive")
        assert typ == "NO" and data[0].startswith(b"[EXPUNGEISSUED]"), (typ, data)
        assert count(a, "Archive") == 0
        a.logout()

    await asyncio.to_thread(run)


@pytest.mark.parametrize("uid", [False, True])
@pytest.mark.parametrize("items", ["(UID FLAGS)", "(UID RFC822.SIZE ENVELOPE)",
                                   "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])", "(UID BODY[])"])
async def test_fetch_of_a_message_expunged_elsewhere(listening: Listening, items: str, uid: bool) -> None:
    """Dovecot's cmd-fetch.c: the messages still there are sent, and the tagged OK carries EXPUNGEISSUED;
    the sequence numbers are the session's view's until the EXPUNGE is announced (after the FETCH)."""
    await deliver(listening, 3)

    def run() -> None:
        a = stale_view(listening)
        typ, data = a.uid("FETCH", "1:3", items) if uid else a.fetch("1:3", items)
        assert typ == "OK", (typ, data)
        fetched = [d[0] if isinstance(d, tuple) else d for d in data]
        fetched = [f for f in fetched if f[:1].isdigit()]  # not the FLAGS after a literal (BODY[] sets \Seen)
        assert [f.split(b" (UID ")[0] + b" " + f.split(b" (UID ")[1].split(b" ")[0] for f in fetched] == \
            [b"1 1", b"3 3"], data
        assert a.response("EXPUNGEISSUED")[1] == [b""]
        if not uid:
            a.noop()
        assert a.response("EXPUNGE") == ("EXPUNGE", [b"2"])  # after a UID FETCH, at once (RFC 9051 §7.5.1)
        typ, data = a.fetch("1:2", "(UID)")
        assert typ == "OK" and data == [b"1 (UID 1)", b"2 (UID 3)"]
        assert a.response("EXPUNGEISSUED")[1] == [None]  # nothing is missing now
        a.logout()

    await asyncio.to_thread(run)


async def test_store_on_a_message_expunged_elsewhere(listening: Listening) -> None:
    """The messages still there are changed (as Dovecot's cmd-store.c does), with the EXPUNGEISSUED hint."""
    await deliver(listening, 3)

    def run() -> None:
        a = stale_view(listening)
        typ, data = a.store("1:3", "+FLAGS", "(\\Flagged)")
        assert typ == "OK", (typ, data)
        assert [d.split(b" ")[0] for d in data] == [b"1", b"3"]
        assert a.response("EXPUNGEISSUED")[1] == [b""]
        assert a.uid("SEARCH", "FLAGGED")[1] == [b"1 3"]
        a.logout()

    await asyncio.to_thread(run)


async def test_fetch_of_a_large_message_expunged_while_it_is_sent(world: World) -> None:
    """A message larger than a stream chunk is sent in pieces read one after the other; when it is
    expunged (and its bytes freed) between two pieces, the literal already announced cannot be finished
    with the right bytes: the connection is closed (as Dovecot does when a FETCH fails midway), never
    padded nor cut short with a tagged reply after it, which would desynchronise the client. (The
    transcript tier: the other session's expunge runs when the first piece has been written.)"""
    body = ("x" * 998 + "\r\n") * (3 * fetch.STREAM_CHUNK // 1000)
    await world.deliver(message(1, body=body))
    a = await world.client()
    await a("s SELECT INBOX")
    other = await world.client()
    await other("s SELECT INBOX")
    await other("t STORE 1 +FLAGS.SILENT (\\Deleted)")
    sent = a.transport

    class ExpungedMidway(type(sent)):  # type: ignore[misc]
        async def drain(self) -> None:
            if len(self.out) > fetch.STREAM_CHUNK and not self.expunged:
                self.expunged = True
                assert "OK" in await other("u EXPUNGE")

    sent.__class__ = ExpungedMidway
    sent.expunged = False  # type: ignore[attr-defined]
    out = await a.raw(b"f FETCH 1 (BODY.PEEK[])\r\n")
    head, _, data = out.partition(b"}\r\n")
    announced = int(head.rsplit(b"{", 1)[1])
    assert announced > len(data) > 0  # the literal was never finished
    assert b"\r\nf " not in data[-100:]  # and no tagged reply follows it
    assert a.session.closed and sent.closed


# --- the selected mailbox deleted or renamed by another session -------------------------------------------

def until_bye(a: imaplib.IMAP4, command: Callable[[], object]) -> bytes:
    """Send `command` until the session ends with BYE (the commands that ask the store only after a
    notification see the deletion once its notification has come); returns the BYE text."""
    for _ in range(500):  # up to ten seconds: the notification crosses PostgreSQL
        try:
            command()
        except imaplib.IMAP4.abort:
            bye = a.untagged_responses.get("BYE")
            assert bye, "the connection ended without BYE"
            return bye[-1]
        time.sleep(0.02)
    raise AssertionError("the session was never told its mailbox was deleted")


COMMANDS: dict[str, Callable[[imaplib.IMAP4], object]] = {
    "NOOP": lambda a: a.noop(),
    "CHECK": lambda a: a.check(),
    "FETCH": lambda a: a.fetch("1", "(FLAGS)"),
    "UID FETCH": lambda a: a.uid("FETCH", "1:*", "(UID BODY.PEEK[])"),
    "STORE": lambda a: a.store("1", "+FLAGS", "(\\Seen)"),
    "SEARCH": lambda a: a.search(None, "ALL"),
    "COPY": lambda a: a.copy("1", "INBOX"),
    "MOVE": lambda a: a.uid("MOVE", "1", "INBOX"),
    "EXPUNGE": lambda a: a.expunge(),
    "STATUS": lambda a: a.status("INBOX", "(MESSAGES)"),
    "APPEND": lambda a: a.append("INBOX", None, None, message(9)),
}


@pytest.mark.parametrize("name", list(COMMANDS))
async def test_selected_mailbox_deleted_elsewhere_ends_the_session(listening: Listening, name: str) -> None:
    """Dovecot: `* BYE Selected mailbox was deleted, have to disconnect.` at the next command (RFC 2180 §3.3:
    there is no other way to tell the client); the command itself must not fail in any other way."""
    await listening.world.pool.execute("INSERT INTO mailboxes (account_id, name) VALUES ($1, 'Work')",
                                       listening.world.account_id)
    await deliver(listening, 2, "Work")

    def run() -> None:
        a = login(listening)
        assert a.select("Work")[0] == "OK"
        b = login(listening)
        assert b.delete("Work")[0] == "OK"
        assert until_bye(a, lambda: COMMANDS[name](a)) == BYE_DELETED
        assert b.noop()[0] == "OK"  # the other session goes on
        b.logout()

    with no_hang():
        await asyncio.to_thread(run)


async def test_selected_mailbox_deleted_during_idle(listening: Listening) -> None:
    await listening.world.pool.execute("INSERT INTO mailboxes (account_id, name) VALUES ($1, 'Work')",
                                       listening.world.account_id)
    await deliver(listening, 1, "Work")

    def run() -> None:
        a = login(listening)
        a.select("Work")
        a.send(b"i1 IDLE\r\n")
        assert a.readline().startswith(b"+ ")
        b = login(listening)
        assert b.delete("Work")[0] == "OK"
        assert a.readline() == b"* BYE " + BYE_DELETED + b"\r\n"  # pushed, the client sent nothing
        assert a.readline() == b""  # and the connection is closed
        b.logout()

    with no_hang():
        await asyncio.to_thread(run)


async def test_own_delete_of_the_selected_mailbox_deselects_it(listening: Listening) -> None:
    """The session's own DELETE is not "another session": it leaves no mailbox selected (RFC 3501 allows
    deleting the selected mailbox), and the session goes on."""
    await listening.world.pool.execute("INSERT INTO mailboxes (account_id, name) VALUES ($1, 'Work')",
                                       listening.world.account_id)

    def run() -> None:
        a = login(listening)
        a.select("Work")
        assert a.delete("Work")[0] == "OK"
        assert a.noop()[0] == "OK"
        with pytest.raises(imaplib.IMAP4.error):
            a.fetch("1", "(FLAGS)")  # BAD: no mailbox selected
        a.logout()

    await asyncio.to_thread(run)


async def test_selected_mailbox_renamed_elsewhere_keeps_working(listening: Listening) -> None:
    """Dovecot follows the selected mailbox by GUID, we by id: after another session's RENAME every
    command works on the mailbox under its new name, and the old name is free."""
    await listening.world.pool.execute("INSERT INTO mailboxes (account_id, name) VALUES ($1, 'Work')",
                                       listening.world.account_id)
    await deliver(listening, 2, "Work")

    def run() -> None:
        a = login(listening)
        assert a.select("Work") == ("OK", [b"2"])
        a.response("EXISTS")  # SELECT's, kept by imaplib
        b = login(listening)
        assert b.rename("Work", "Job")[0] == "OK"
        assert b.append("Job", None, None, message(3))[0] == "OK"
        typ, _ = a.noop()
        assert typ == "OK" and a.response("EXISTS") == ("EXISTS", [b"3"])
        typ, data = a.fetch("3", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"message 3" in data[0][1]
        assert a.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert a.expunge() == ("OK", [b"1"])
        typ, data = a.copy("1", "Archive")
        assert typ == "OK" and count(a, "Archive") == 1
        assert a.uid("MOVE", "3", "Archive")[0] == "OK"
        assert count(a, "Job") == 1 and count(a, "Archive") == 2
        assert a.status("Work", "(MESSAGES)")[0] == "NO"
        # a new mailbox under the old name is another mailbox: this session stays on Job
        assert b.create("Work")[0] == "OK"
        assert b.append("Work", None, None, message(4))[0] == "OK"
        assert a.noop()[0] == "OK" and a.response("EXISTS")[1] == [None]
        assert a.search(None, "ALL") == ("OK", [b"1"])
        # a DELETE of the old name by this session deletes the new Work, and Job stays selected
        assert a.delete("Work")[0] == "OK"
        assert a.search(None, "ALL") == ("OK", [b"1"])
        # and a DELETE of the new name is of the selected mailbox: it is deselected, no BYE
        assert a.delete("Job")[0] == "OK"
        assert a.noop()[0] == "OK" and a.response("BYE")[1] == [None]
        a.logout()
        b.logout()

    with no_hang():
        await asyncio.to_thread(run)
