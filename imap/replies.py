"""Named tagged replies: every OK/NO/BAD the session can end a command with, in one place.

Owns the text and response code of each completion (tests assert against these names) and the
`Refusal` exception a handler raises to end its command with one of them.
Must not: carry exception text or any other detail from inside the server to the client.
"""

from __future__ import annotations

from dataclasses import dataclass

from imap import encoder
from imap.encoder import Code
from imap.grammar import BADCHARSET


@dataclass(frozen=True)
class Reply:
    """A tagged completion: `tag kind [code] text`."""

    kind: str  # OK, NO, BAD
    text: str
    code: Code | None = None

    def encode(self, tag: str) -> bytes:
        return encoder.status(tag, self.kind, self.text, self.code)

    def with_code(self, code: Code) -> Reply:
        return Reply(self.kind, self.text, code)


class Abort(Exception):
    """Raised while a response is half sent (a literal announced and not finished) when it cannot be
    finished: no reply can follow it, so the session logs `reason` and closes the connection."""


class Refusal(Exception):
    """Raised by a handler: the command ends with `reply` (NO or BAD)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


def completed(name: str, code: Code | None = None) -> Reply:
    return Reply("OK", f"{name} completed", code)


# not authenticated
AUTH_FAILED = Reply("NO", "authentication failed", encoder.AUTHENTICATIONFAILED)
AUTH_LOCKED = Reply("NO", "too many failed logins, try again later", encoder.UNAVAILABLE)
PRIVACY_REQUIRED = Reply("NO", "use TLS (STARTTLS or port 993) before logging in", encoder.PRIVACYREQUIRED)
TOO_MANY_CONNECTIONS = Reply("NO", "too many connections for this account from your address", encoder.LIMIT)
MECHANISM_UNSUPPORTED = Reply("NO", "unsupported authentication mechanism", encoder.CANNOT)
AUTH_CANCELLED = Reply("BAD", "authentication cancelled")
AUTH_MALFORMED = Reply("BAD", "malformed authentication response")
TLS_UNAVAILABLE = Reply("NO", "TLS is not available")
TLS_ACTIVE = Reply("BAD", "TLS is already active")
TLS_READY = Reply("OK", "begin TLS negotiation now")

# state and syntax
WRONG_STATE = Reply("BAD", "command not valid in this state")
NOT_SUPPORTED = Reply("BAD", "command not supported")
BAD_SEQUENCE = Reply("BAD", "invalid message sequence number")
BAD_ITEMS = Reply("BAD", "unsupported data item")
LOGOUT = Reply("OK", "LOGOUT completed")
IDLE_DONE = Reply("OK", "IDLE terminated")
IDLE_BAD = Reply("BAD", "expected DONE")

# mailboxes
NO_SUCH_MAILBOX = Reply("NO", "no such mailbox", encoder.NONEXISTENT)
TRY_CREATE = Reply("NO", "no such mailbox", encoder.TRYCREATE)
MAILBOX_EXISTS = Reply("NO", "mailbox already exists", encoder.ALREADYEXISTS)
HAS_CHILDREN = Reply("NO", "mailbox has children; delete them first", encoder.INUSE)
CANNOT = Reply("NO", "not allowed for this mailbox", encoder.CANNOT)
BAD_NAME = Reply("NO", "invalid mailbox name", encoder.CANNOT)
READ_ONLY = Reply("NO", "mailbox is read-only", encoder.READ_ONLY)
OVER_QUOTA = Reply("NO", "over quota", encoder.OVERQUOTA)
NO_SUCH_QUOTA_ROOT = Reply("NO", "no such quota root")
EMPTY_MESSAGE = Reply("NO", "empty message")
TOO_MANY_MAILBOXES = Reply("NO", "too many mailboxes", encoder.LIMIT)  # RFC 5530
TOO_MANY_KEYWORDS = Reply("NO", "too many keywords in this mailbox", encoder.LIMIT)  # RFC 5530
COPY_NOTHING = Reply("NO", "no messages to copy")
# RFC 9051 §7.1, as Dovecot: a COPY/MOVE naming messages another session expunged copies none (a FETCH or
# STORE does what it can with the others and completes OK [EXPUNGEISSUED])
EXPUNGE_ISSUED = Reply("NO", "some of the requested messages no longer exist", encoder.EXPUNGEISSUED)
SELECTED_DELETED = "Selected mailbox was deleted, have to disconnect."  # Dovecot's BYE
SEARCH_TOO_LONG = Reply("NO", "search strings too long", encoder.LIMIT)
SEARCH_TOO_MANY_KEYS = Reply("NO", "too many search keys", encoder.LIMIT)
BAD_CHARSET = Reply("NO", "unsupported charset", Code(BADCHARSET))  # RFC 3501 §6.4.4: NO, not BAD

# the one reply for anything unexpected: the cause goes to the log, never to the client
SERVER_BUG = Reply("NO", "internal server error", encoder.SERVERBUG)
UNAVAILABLE = Reply("NO", "temporary failure, try again", encoder.UNAVAILABLE)
