"""Transcripts of the authenticated-state mailbox commands over a real store."""

from __future__ import annotations

from imap import replies
from tests.imap.conftest import World, message


async def test_list_all_with_special_use_and_children(world: World) -> None:
    c = await world.client()
    assert (await c("a CREATE Projects/2026/Q1")).startswith("a OK")
    out = await c('b LIST "" "*"')
    lines = out.splitlines()
    assert '* LIST (\\HasNoChildren) "/" INBOX' in lines
    assert '* LIST (\\HasNoChildren \\Sent) "/" Sent' in lines
    assert '* LIST (\\HasNoChildren \\Trash) "/" Trash' in lines
    assert '* LIST (\\HasChildren) "/" Projects' in lines
    assert '* LIST (\\HasChildren) "/" Projects/2026' in lines
    assert lines[-1] == "b OK LIST completed"
    out = await c('c LIST "" "%"')
    assert "Projects/2026" not in out and '"/" Projects' in out
    out = await c('d LIST "Projects/" "%"')
    assert out.splitlines()[:-1] == ['* LIST (\\HasChildren) "/" Projects/2026']
    assert await c('e LIST "" ""') == '* LIST (\\Noselect) "/" ""\r\ne OK LIST completed\r\n'
    out = await c('f LIST "" inbox')
    assert out.splitlines()[0] == '* LIST (\\HasNoChildren) "/" INBOX'


async def test_list_extended_subscribed_as_thunderbird_sends_it(world: World) -> None:
    c = await world.client()
    await c("a UNSUBSCRIBE Junk")
    out = await c('b LIST (SUBSCRIBED) "" "*"')
    assert "Junk" not in out and '(\\HasNoChildren \\Subscribed) "/" INBOX' in out
    out = await c('c LSUB "" "*"')
    assert '* LSUB () "/" INBOX' in out and "Junk" not in out
    out = await c('d LIST (SPECIAL-USE) "" "*"')
    assert "INBOX" not in out and "\\Drafts" in out


async def test_list_return_status(world: World) -> None:
    await world.deliver(message(1))
    c = await world.client()
    out = await c('a LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN))')
    assert "* STATUS INBOX (MESSAGES 1 UNSEEN 1)" in out


async def test_create_delete_rename(world: World) -> None:
    c = await world.client()
    assert await c("a CREATE Sent") == replies.MAILBOX_EXISTS.encode("a").decode()
    assert await c("b CREATE inbox") == replies.MAILBOX_EXISTS.encode("b").decode()
    assert (await c('c CREATE "Bad%Name"')) == replies.BAD_NAME.encode("c").decode()
    assert (await c("d CREATE Folder/")).startswith("d OK")
    assert (await c("e CREATE Folder/Sub")).startswith("e OK")
    assert await c("f DELETE Folder") == replies.HAS_CHILDREN.encode("f").decode()
    assert (await c("g RENAME Folder Renamed")).startswith("g OK")
    out = await c('h LIST "" "Renamed*"')
    assert '"/" Renamed\r\n' in out and '"/" Renamed/Sub\r\n' in out
    assert (await c("i DELETE Renamed/Sub")).startswith("i OK")
    assert (await c("j DELETE Renamed")).startswith("j OK")
    assert await c("k DELETE INBOX") == replies.CANNOT.encode("k").decode()
    assert await c("l DELETE Nope") == replies.NO_SUCH_MAILBOX.encode("l").decode()
    assert await c("m RENAME Sent Drafts") == replies.MAILBOX_EXISTS.encode("m").decode()


async def test_rename_inbox_moves_messages_and_leaves_it_empty(world: World) -> None:
    await world.deliver(message(1))
    await world.deliver(message(2))
    c = await world.client()
    assert (await c("a RENAME INBOX Old")).startswith("a OK")
    assert "MESSAGES 0" in await c("b STATUS INBOX (MESSAGES)")
    assert "MESSAGES 2 UIDNEXT 3" in await c("c STATUS Old (MESSAGES UIDNEXT)")


async def test_unicode_mailbox_names_in_modified_utf7(world: World) -> None:
    c = await world.client()
    assert (await c("a CREATE &AMk-t&AOk-")).startswith("a OK")  # "Été"
    assert '"/" &AMk-t&AOk-' in await c('b LIST "" "*"')


async def test_status(world: World) -> None:
    await world.deliver(message(1))
    uid = await world.deliver(message(2))
    c = await world.client()
    out = await c("a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")
    assert out.startswith(f"* STATUS INBOX (MESSAGES 2 RECENT 2 UIDNEXT {uid + 1} UIDVALIDITY ")
    assert "UNSEEN 2)" in out
    assert (await c("b STATUS INBOX (BOGUS)")).startswith("b BAD")
    assert await c("c STATUS Nope (MESSAGES)") == replies.NO_SUCH_MAILBOX.encode("c").decode()


async def test_select_and_examine(world: World) -> None:
    await world.deliver(message(1))
    await world.deliver(message(2))
    c = await world.client()
    out = await c('a SELECT "INBOX"')
    assert "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)" in out
    assert "* 2 EXISTS" in out and "* 2 RECENT" in out and "[UNSEEN 1]" in out
    assert "[UIDNEXT 3]" in out and "[UIDVALIDITY " in out
    assert "[PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in out
    assert out.endswith("a OK [READ-WRITE] SELECT completed\r\n")
    other = await world.client()
    out = await other("b EXAMINE INBOX")
    assert "* 0 RECENT" in out and out.endswith("b OK [READ-ONLY] EXAMINE completed\r\n")
    assert await other("c STORE 1 +FLAGS (\\Seen)") == replies.READ_ONLY.encode("c").decode()
    assert await c("d SELECT Nope") == replies.NO_SUCH_MAILBOX.encode("d").decode()
    assert await c("e FETCH 1 FLAGS") == replies.WRONG_STATE.encode("e").decode()


async def test_uidvalidity_is_stable_and_never_reused(world: World) -> None:
    c = await world.client()
    await c("a CREATE Box")
    first = (await c("b STATUS Box (UIDVALIDITY)")).split("UIDVALIDITY ")[1].split(")")[0]
    assert first in await c("c STATUS Box (UIDVALIDITY)")
    await c("d DELETE Box")
    await c("e CREATE Box")
    assert first not in await c("f STATUS Box (UIDVALIDITY)")


async def test_append_with_flags_date_and_appenduid(world: World) -> None:
    c = await world.client()
    raw = message(7, "appended")
    out = await c(b'a APPEND Sent (\\Seen) " 5-Nov-2026 09:08:07 +0100" {%d+}\r\n' % len(raw) + raw)
    assert "a OK [APPENDUID " in out and out.rstrip().endswith("1] APPEND completed")
    await c("b SELECT Sent")
    out = await c("c FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)")
    assert f'* 1 FETCH (FLAGS (\\Seen \\Recent) INTERNALDATE "05-Nov-2026 08:08:07 +0000" RFC822.SIZE {len(raw)})' \
        in out
    assert await c(b"d APPEND Nope {1+}\r\nx") == replies.TRY_CREATE.encode("d").decode()


async def test_append_synchronising_literal(world: World) -> None:
    c = await world.client()
    raw = message(8)
    assert (await c(b"a APPEND INBOX {%d}" % len(raw))).startswith("+ ")
    assert "a OK [APPENDUID" in await c(raw)


async def test_append_over_quota(world: World) -> None:
    await world.pool.execute("UPDATE accounts SET quota_bytes = 10")
    c = await world.client()
    raw = message(9)
    assert await c(b"a APPEND INBOX {%d+}\r\n" % len(raw) + raw) == replies.OVER_QUOTA.encode("a").decode()


async def test_append_follows_renames_deletes_and_quota_after_the_first(world: World) -> None:
    c = await world.client()
    raw = message(10)
    await c("a CREATE Box")
    assert "] APPEND completed" in await c(b"b APPEND Box {%d+}\r\n" % len(raw) + raw)
    await c("c RENAME Box Old")
    await c("d CREATE Box")  # the session knew Box by the id Old has now
    assert "1] APPEND completed" in await c(b"e APPEND Box {%d+}\r\n" % len(raw) + raw)
    assert "MESSAGES 1)" in await c("f STATUS Old (MESSAGES)")
    assert "MESSAGES 1)" in await c("g STATUS Box (MESSAGES)")
    await c("h DELETE Box")
    assert await c(b"i APPEND Box {1+}\r\nx") == replies.TRY_CREATE.encode("i").decode()
    await world.pool.execute("UPDATE accounts SET quota_bytes = used_bytes")
    used = await world.pool.fetchval("SELECT used_bytes FROM accounts")
    assert await c(b"j APPEND Old {%d+}\r\n" % len(raw) + raw) == replies.OVER_QUOTA.encode("j").decode()
    assert await world.pool.fetchval("SELECT used_bytes FROM accounts") == used
    assert "MESSAGES 1)" in await c("k STATUS Old (MESSAGES)")
    assert "UIDNEXT 2)" in await c("l STATUS Old (UIDNEXT)")  # the refused APPEND took no UID


async def test_append_too_big_is_refused_and_session_goes_on(world: World) -> None:
    from tests.imap.conftest import make_settings

    settings = make_settings()
    import dataclasses

    settings = dataclasses.replace(settings, smtp=dataclasses.replace(settings.smtp, max_message_size=100))
    c = await world.client(settings=settings)
    out = await c(b"a APPEND INBOX {200+}\r\n" + b"x" * 200)  # up to twice the limit: dropped, not closed
    assert "a BAD [TOOBIG]" in out
    assert (await c("b NOOP")).startswith("b OK")


async def test_append_to_the_selected_mailbox_announces_exists(world: World) -> None:
    c = await world.client()
    await c("s SELECT INBOX")
    raw = message(1)
    out = await c(b"a APPEND INBOX {%d+}\r\n" % len(raw) + raw)
    assert out.startswith("* 1 EXISTS\r\n* 1 RECENT\r\na OK [APPENDUID ")


async def test_list_return_status_with_unknown_item_is_bad(world: World) -> None:
    c = await world.client()
    assert (await c('a LIST "" "*" RETURN (STATUS (FROB))')).startswith("a BAD")
