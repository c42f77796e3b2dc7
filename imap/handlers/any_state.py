"""Commands valid in any state (RFC 3501 §6.1): CAPABILITY, NOOP, LOGOUT, and ID (RFC 2971)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imap import encoder, replies
from imap.commands import Id, Simple
from imap.dispatch import Needs, command
from imap.replies import Reply

if TYPE_CHECKING:
    from imap.session import Session

SERVER_ID = {"name": "mailserver", "vendor": "mailserver"}


@command("CAPABILITY", needs=Needs.ANY)
async def capability(session: Session, cmd: Simple) -> Reply:
    session.send(b"* CAPABILITY " + " ".join(session.capabilities()).encode() + b"\r\n")
    return replies.completed(cmd.name)


@command("NOOP", needs=Needs.ANY)
async def noop(session: Session, cmd: Simple) -> Reply:
    return replies.completed(cmd.name)  # the session sends mailbox updates after every command


@command("LOGOUT", needs=Needs.ANY)
async def logout(session: Session, cmd: Simple) -> None:
    session.send(encoder.bye("logging out"))
    session.send(replies.LOGOUT.encode(cmd.tag))
    await session.close()


@command("ID", needs=Needs.ANY)
async def id_(session: Session, cmd: Id) -> Reply:
    session.client_id = cmd.params
    items: list[encoder.Value] = []
    for k, v in SERVER_ID.items():
        items += [k, v]
    session.send(encoder.untagged(encoder.Atom("ID"), items))
    return replies.completed(cmd.name)
