"""Named SMTP replies with enhanced status codes (RFC 5321 §4.2, RFC 3463), in the style of mox's codes.go.

Every reply our SMTP code sends is one of these constants, or one of them with its text replaced
(`Reply.with_text`). Tests assert against the names, never against loose strings. The text is always
ours: never put an exception's message or unsanitised peer input into a reply.
This module knows no socket and no protocol state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: basic code, enhanced code (RFC 3463) and human text."""

    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}" if self.enhanced else f"{self.code} {self.text}"

    def with_text(self, text: str) -> Reply:
        """The same codes with other (our own, single-line) text."""
        return replace(self, text=" ".join(text.split()))

    def lines(self) -> list[str]:
        """The reply as wire lines (without CRLF); multi-line text becomes a continuation reply."""
        parts = self.text.split("\n")
        out = []
        for i, part in enumerate(parts):
            sep = " " if i == len(parts) - 1 else "-"
            out.append(f"{self.code}{sep}{self.enhanced + ' ' if self.enhanced else ''}{part}")
        return out

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500


# --- 2xx / 3xx ----------------------------------------------------------------------------------------
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "recipient OK")
MESSAGE_ACCEPTED = Reply(250, "2.0.0", "message accepted")
CHUNK_RECEIVED = Reply(250, "2.0.0", "chunk received")
RESET = Reply(250, "2.0.0", "reset")
NOOP_OK = Reply(250, "2.0.0", "OK")
CANNOT_VRFY = Reply(252, "2.5.0", "cannot verify the user, but will accept the message and attempt delivery")
HELP = Reply(214, "2.0.0", "see RFC 5321")
BYE = Reply(221, "2.0.0", "bye")
AUTH_OK = Reply(235, "2.7.0", "authentication succeeded")
READY_FOR_TLS = Reply(220, "2.0.0", "ready to start TLS")
START_DATA = Reply(354, "", "end data with <CR><LF>.<CR><LF>")

# --- 4xx: try again later ------------------------------------------------------------------------------
SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "service shutting down, try again later")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "too many connections, try again later")
CONNECTION_RATE_EXCEEDED = Reply(421, "4.7.0", "too many connections from your address, try again later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "too many errors, closing connection")
TOO_MANY_COMMANDS = Reply(421, "4.7.0", "command used too many times, closing connection")
IDLE_TIMEOUT = Reply(421, "4.4.2", "timeout, closing connection")
PROXY_REFUSED = Reply(421, "4.7.0", "PROXY header not accepted from this address")
TEMPORARY_FAILURE = Reply(451, "4.3.0", "temporary failure, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "too many recipients")
AUTH_TEMPORARILY_LOCKED = Reply(454, "4.7.0", "too many failed authentication attempts, try again later")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
CHECK_TEMPFAIL = Reply(451, "4.7.1", "message could not be verified now, try again later")
MESSAGE_RATE_EXCEEDED = Reply(451, "4.7.1", "too many messages sent; try again later")
MAILBOX_FULL = Reply(452, "4.2.2", "mailbox full")

# --- 5xx: permanent ------------------------------------------------------------------------------------
COMMAND_UNRECOGNIZED = Reply(500, "5.5.1", "command not recognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "line too long")
SYNTAX_ERROR = Reply(501, "5.5.2", "syntax error")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "bad recipient address syntax")
PARAMETER_SYNTAX = Reply(501, "5.5.4", "invalid parameter")
PARAMETER_UNKNOWN = Reply(555, "5.5.4", "parameter not recognized")
COMMAND_NOT_IMPLEMENTED = Reply(502, "5.5.1", "command not implemented")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
HELO_FIRST = Reply(503, "5.5.1", "send EHLO or HELO first")
BAD_SEQUENCE = Reply(503, "5.5.1", "bad sequence of commands")
NESTED_MAIL = Reply(503, "5.5.1", "sender already given")
NEED_MAIL = Reply(503, "5.5.1", "need MAIL first")
NEED_RCPT = Reply(503, "5.5.1", "need RCPT first")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "already authenticated")
MIXED_DATA_BDAT = Reply(503, "5.5.1", "DATA and BDAT cannot be mixed in one transaction")
AUTH_MECHANISM_UNKNOWN = Reply(504, "5.5.4", "unrecognized authentication mechanism")
AUTH_NOT_AVAILABLE = Reply(503, "5.5.1", "authentication not available on this port")
AUTH_ABORTED = Reply(501, "5.0.0", "authentication aborted")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "cannot decode base64")
TLS_REQUIRED = Reply(530, "5.7.0", "must issue a STARTTLS command first")
AUTH_REQUIRED = Reply(530, "5.7.0", "authentication required")
PIPELINING_VIOLATION = Reply(554, "5.5.0", "improper command pipelining")
AUTH_FAILED = Reply(535, "5.7.8", "authentication credentials invalid")
MAILBOX_UNAVAILABLE = Reply(550, "5.1.1", "no such user here")
RELAY_DENIED = Reply(554, "5.7.1", "relay access denied")
CONTENT_REJECTED = Reply(550, "5.7.1", "message rejected by policy")
DMARC_REJECTED = Reply(550, "5.7.1", "message rejected: it fails the DMARC policy of its From domain")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "sender address not owned by the authenticated user")
MAILBOX_NAME_NOT_ALLOWED = Reply(553, "5.1.3", "address not accepted")
SMTPUTF8_REQUIRED = Reply(553, "5.6.7", "non-ASCII address requires SMTPUTF8")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "message size exceeds fixed limit")
# After DATA, the message's real size against the quota: permanent, as Dovecot's LMTP answers with its
# default quota_full_tempfail = no (RFC 3463 X.2.2: mailbox full).
QUOTA_EXCEEDED = Reply(552, "5.2.2", "mailbox full: quota exceeded")
HEADER_TOO_BIG = Reply(552, "5.3.4", "message header exceeds fixed limit (1 MB)")
MESSAGE_LINE_TOO_LONG = Reply(550, "5.6.0", "message line longer than 1000 octets (RFC 5321 4.5.3.1.6)")
BARE_CR_OR_LF = Reply(550, "5.6.0", "message contains a bare CR or LF; lines must end with CRLF")
NUL_IN_MESSAGE = Reply(550, "5.6.0", "message contains a NUL octet")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "no valid recipients")
