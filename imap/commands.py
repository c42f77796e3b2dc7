"""The typed IMAP commands the parser produces, and the other parser events.

Owns: one frozen dataclass per command (a session dispatches with `match` on the class or on
`name`), the search-key tree and FETCH attribute types. Every command carries `tag`, `name`
(upper case) and `uid` (UID prefix). Mailbox names are already decoded from modified UTF-7 and
INBOX is normalised (RFC 3501 §5.1). Must not: parse or do I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from imap.sequence import SequenceSet

# ---- events that are not commands ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A line that could not be parsed: answer `tag BAD [code] text` (tag "*" if none was read)."""

    tag: str
    text: str
    code: str | None = None  # e.g. "TOOBIG" (RFC 7889), "BADCHARSET" (RFC 3501 §6.4.4)


@dataclass(frozen=True, slots=True)
class ContinuationNeeded:
    """A synchronising literal `{size}` was announced: send `+ ...`, then keep feeding."""

    size: int


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """One client line of an AUTHENTICATE exchange (base64, or "*" to cancel), without CRLF."""

    data: bytes

    @property
    def cancelled(self) -> bool:
        return self.data.strip() == b"*"  # RFC 3501 §6.2.2


@dataclass(frozen=True, slots=True)
class IdleDone:
    """The line that ends IDLE. `valid` is False when it was not DONE (RFC 2177)."""

    valid: bool = True


@dataclass(frozen=True, slots=True)
class Hangup:
    """The client is sending more than we will read (a too-large non-synchronising literal): say
    `* BYE text` and close the connection."""

    text: str


# ---- commands ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    tag: str
    name: str
    uid: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Simple(Command):
    """CAPABILITY, NOOP, LOGOUT, STARTTLS, CHECK, CLOSE, UNSELECT, IDLE, NAMESPACE, and
    EXPUNGE without UID: commands without arguments."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE with a UID set (RFC 4315 §2.1)."""

    uids: SequenceSet | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Login(Command):
    username: str  # UTF-8, undecodable bytes kept as surrogates
    password: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticate(Command):
    mechanism: str  # upper case
    initial_response: bytes | None = None  # RFC 4959 SASL-IR, still base64; b"=" means empty


@dataclass(frozen=True, slots=True, kw_only=True)
class Select(Command):
    """SELECT, or EXAMINE (`readonly`). `params` holds (CONDSTORE) / (QRESYNC (...)) as given."""

    mailbox: str
    readonly: bool = False
    params: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Create(Command):
    mailbox: str
    special_use: tuple[str, ...] = ()  # RFC 6154 §3 CREATE ... (USE (\Sent))


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxCommand(Command):
    """DELETE, SUBSCRIBE, UNSUBSCRIBE, GETQUOTAROOT: one mailbox argument."""

    mailbox: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetQuota(Command):
    """GETQUOTA (RFC 9208 §4.2): a quota root's name, as sent (not a mailbox name)."""

    root: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rename(Command):
    old: str
    new: str


@dataclass(frozen=True, slots=True, kw_only=True)
class List(Command):
    """LIST, basic or extended (RFC 5258), and LSUB (`name` "LSUB", `selection` {"SUBSCRIBED"})."""

    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[str] = frozenset()  # SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE
    returns: frozenset[str] = frozenset()  # SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS
    status_items: tuple[str, ...] = ()  # RFC 5819 RETURN (STATUS (...))
    extended: bool = False  # any extended syntax used: reply in extended form


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Command):
    mailbox: str
    items: tuple[str, ...]  # upper case: MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT SIZE ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendMessage:
    flags: tuple[str, ...]
    date: datetime | None
    message: bytes
    binary: bool = False  # sent as literal8 ~{n} (RFC 3516)


@dataclass(frozen=True, slots=True, kw_only=True)
class Append(Command):
    """APPEND; more than one message is MULTIAPPEND (RFC 3502)."""

    mailbox: str
    messages: tuple[AppendMessage, ...]


# search keys: RFC 3501 §6.4.4


@dataclass(frozen=True, slots=True)
class Key:
    """One search key: `name` upper case ("SEEN", "FROM", "BEFORE", "LARGER", "HEADER", "UID",
    "SEQSET", "MODSEQ", ...); `value` is its typed argument (str, date, int, SequenceSet,
    (field, str) for HEADER), or None."""

    name: str
    value: object = None


@dataclass(frozen=True, slots=True)
class And:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class Or:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class Not:
    key: SearchKey


SearchKey = Key | And | Or | Not


@dataclass(frozen=True, slots=True, kw_only=True)
class Search(Command):
    criteria: And
    charset: str | None = None
    returns: tuple[str, ...] | None = None  # RFC 4731 ESEARCH: None when no RETURN was given
    charset_supported: bool = True  # False: answer NO [BADCHARSET] (the strings were not decoded)


# fetch: RFC 3501 §6.4.5


@dataclass(frozen=True, slots=True)
class Section:
    """A BODY[...] section: part numbers, then HEADER / HEADER.FIELDS[.NOT] / TEXT / MIME."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()  # header names as the client wrote them

    def __str__(self) -> str:
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
        if self.fields:
            out += " (" + " ".join(self.fields) + ")"
        return out


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """One FETCH item. `name` is ENVELOPE, FLAGS, INTERNALDATE, RFC822, RFC822.HEADER,
    RFC822.SIZE, RFC822.TEXT, BODY, BODYSTRUCTURE, UID, MODSEQ, BINARY, BINARY.SIZE, ...
    BODY with `section` set is BODY[...]; `peek` marks BODY.PEEK / BINARY.PEEK."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None  # <origin.length>
    peek: bool = False

    def response_name(self) -> str:
        """The item name in the FETCH response (RFC 3501 §7.4.2: `BODY[sect]<origin>`)."""
        if self.section is None:
            return self.name
        out = f"{self.name}[{self.section}]"
        if self.partial is not None and self.name != "BINARY.SIZE":
            out += f"<{self.partial[0]}>"
        return out

    @property
    def sets_seen(self) -> bool:
        """RFC 3501 §6.4.5: BODY[...], RFC822, RFC822.TEXT and BINARY[...] set \\Seen."""
        if self.peek:
            return False
        return self.name in ("RFC822", "RFC822.TEXT", "BINARY") or (
            self.name == "BODY" and self.section is not None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch(Command):
    sequence: SequenceSet
    attributes: tuple[FetchAtt, ...]
    changedsince: int | None = None  # RFC 7162 §3.1.4.1
    vanished: bool = False  # RFC 7162 §3.2.6


@dataclass(frozen=True, slots=True, kw_only=True)
class Store(Command):
    sequence: SequenceSet
    mode: str  # "set" (FLAGS), "add" (+FLAGS), "remove" (-FLAGS)
    flags: tuple[str, ...]
    silent: bool = False
    unchangedsince: int | None = None  # RFC 7162 §3.1.3


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy(Command):
    """COPY, or MOVE (`name` "MOVE", RFC 6851)."""

    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Enable(Command):
    capabilities: tuple[str, ...]  # upper case


@dataclass(frozen=True, slots=True, kw_only=True)
class Id(Command):
    """RFC 2971: None for `ID NIL`."""

    params: dict[str, str | None] | None = field(default=None, hash=False)


Event = Command | BadCommand | ContinuationNeeded | AuthResponse | IdleDone | Hangup

