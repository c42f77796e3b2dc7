"""Turning a `POST /v1/send` body into an envelope and RFC 5322 bytes, and a stored message into JSON.

Owns the request and response shapes of messages (pydantic models, which also make the OpenAPI schema)
and the MIME building and reading, via the standard library's `email` package with the SMTP policy
(CRLF, RFC 2047 encoded words, lines folded at 78). Header names and values from the client are checked
here: no CR, LF or NUL, and no header the submission path owns.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import re
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailcore.address import AddressError, parse_address

# Headers the client may not set through `headers`: they come from named fields or from the server.
RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version", "content-type",
    "content-transfer-encoding", "content-disposition", "received", "return-path", "delivered-to",
    "dkim-signature", "arc-seal", "arc-message-signature", "arc-authentication-results",
    "authentication-results", "sender",
})
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 §3.6.8 ftext
# What may not appear in a one-line value: NUL and every character `str.splitlines` breaks at. The email
# package's header policy refuses a value with any of them (ValueError, which was a 500), not CR and LF
# alone: VT, FF, FS/GS/RS, NEL, U+2028 and U+2029 count as line breaks too.
_LINE_BREAK = re.compile("[\0\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# Line endings other than CRLF (RFC 5322 §2.3), turned into CRLF in a raw message.
_BARE_EOL = re.compile(rb"\r\n|\r|\n")
MAX_LINE = 998  # RFC 5322 §2.1.1: octets of a line before its CRLF


def one_line(value: str) -> bool:
    """True if `value` can be a header field value as it is: no NUL and no line break of any kind."""
    return _LINE_BREAK.search(value) is None


class Attachment(BaseModel):
    """A file to attach: name, MIME type and the content in base64."""

    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")
    content: str = Field(description="base64 (RFC 4648 §4)")

    @field_validator("filename")
    @classmethod
    def _filename_one_line(cls, value: str) -> str:
        # It becomes a Content-Disposition parameter: a line break would be a 500, a NUL a store failure.
        if not one_line(value):
            raise ValueError("must be one line, without NUL")
        return value

    def data(self) -> bytes:
        """The decoded bytes; ValueError if `content` is not base64."""
        try:
            return base64.b64decode(self.content, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"attachment {self.filename!r}: content is not base64") from exc


class SendRequest(BaseModel):
    """A message to send, as JSON."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from", description="Sender: `addr` or `Name <addr>`; must be yours.")
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list, description="Envelope recipients not shown in the headers.")
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers, e.g. Reply-To, "
                                    "In-Reply-To, References, List-Unsubscribe, X-*.")

    @field_validator("headers")
    @classmethod
    def _headers_ok(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name} cannot be set here")
            if not one_line(text):
                raise ValueError(f"header {name}: value contains a line break or NUL")
        return value

    @field_validator("subject", "from_")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if not one_line(value):
            raise ValueError("must be one line")
        return value


class ComposeError(ValueError):
    """The request cannot become a message; the text is for the client."""


def _mailboxes(text: str, what: str, *, empty_group: bool = False) -> list[str]:
    """The addr-specs in an address-list header value (see `_addresses`)."""
    return [a.addr_spec for a in _addresses(text, what, empty_group=empty_group)]


def _addresses(text: str, what: str, *, empty_group: bool = False) -> list[Address]:
    """The mailboxes in an address-list header value, parsed by the modern (RFC 5322) header parser
    rather than `parseaddr`, which older Pythons let misparse crafted input (CVE-2023-27043); each
    with its display name and its addr-spec normalized (an IDN domain as A-labels).

    With `empty_group`, a value that is only empty groups (`undisclosed-recipients:;`, RFC 5322 §3.4)
    gives no addresses instead of an error: a raw message may say that in To and list its recipients
    in Bcc."""
    if not one_line(text):
        raise ComposeError(f"{what}: must be one line")
    try:
        # An encoded word may decode to CR or LF; the parser then refuses to build the address.
        header = email.policy.default.header_factory("To", text)
        addresses = header.addresses
    except ValueError:
        raise ComposeError(f"{what} {text!r}: not an address") from None
    if any(type(d).__name__ in ("InvalidHeaderDefect", "ObsoleteHeaderDefect") for d in header.defects) \
            and not addresses:
        raise ComposeError(f"{what} {text!r}: not an address")
    if empty_group and not addresses and header.groups and all(g.display_name for g in header.groups):
        return []
    out = []
    for addr in addresses:
        try:
            local, _, domain = str(parse_address(addr.addr_spec)).rpartition("@")
            # By parts: Address(addr_spec=) parses again and raises a defect (not a ValueError) on UTF-8.
            out.append(Address(display_name=addr.display_name, username=local, domain=domain))
        except AddressError as exc:
            raise ComposeError(f"{what} {text!r}: {exc}") from None
    if not out:
        raise ComposeError(f"{what} {text!r}: not an address")
    return out


def _one_address(text: str, what: str) -> Address:
    found = _addresses(text, what)
    if len(found) != 1:
        raise ComposeError(f"{what} {text!r}: exactly one address expected")
    return found[0]


def _address_of(text: str, what: str) -> str:
    return _one_address(text, what).addr_spec


def compose(req: SendRequest) -> tuple[str, list[str], bytes]:
    """(envelope sender, envelope recipients, RFC 5322 bytes) for a JSON send request. Each address is
    parsed once: the envelope takes its addr-spec, the header the whole mailbox."""
    sender = _one_address(req.from_, "from")
    fields = {name: [_one_address(item, name) for item in getattr(req, name)] for name in ("to", "cc", "bcc")}
    recipients: list[str] = []
    for addr in (a.addr_spec for found in fields.values() for a in found):
        if addr.lower() not in (r.lower() for r in recipients):
            recipients.append(addr)
    if not recipients:
        raise ComposeError("at least one recipient (to, cc or bcc) is needed")
    if req.text is None and req.html is None and not req.attachments:
        raise ComposeError("a message needs text, html or an attachment")
    try:
        raw = _build(req, sender, fields["to"], fields["cc"])
    except ComposeError:
        raise
    except (ValueError, TypeError) as exc:  # e.g. a header the policy refuses: the request's fault
        raise ComposeError(f"message cannot be built: {exc}") from None
    return sender.addr_spec, recipients, wire_form(raw)


def _build(req: SendRequest, sender: Address, to: list[Address], cc: list[Address]) -> bytes:
    """The RFC 5322 bytes of a checked request; ValueError or TypeError for what the email package
    refuses (ComposeError for a bad attachment)."""
    # A UTF-8 local part can only be written as it is: an internationalised message (RFC 6532 §3.2),
    # which the queue sends with SMTPUTF8 (or bounces, 5.6.7, where the receiver lacks it). The email
    # package's SMTP policy put an encoded word there, a different address. Its SMTPUTF8 policy writes
    # the message's other non-ASCII text in UTF-8 too; a message of ASCII addresses keeps RFC 2047, so a
    # server without SMTPUTF8 still takes it.
    utf8 = not all(a.username.isascii() for a in (sender, *to, *cc))
    msg = EmailMessage(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)
    # Written from the parsed addresses, not the request's text: the email package would put an IDN
    # domain in an RFC 2047 encoded word, which is not allowed in an addr-spec (RFC 2047 §5), so the
    # recipient saw `bob@=?utf-8?q?ex=C3=A4mple?=.test`. The domain goes out as A-labels (RFC 5890).
    msg["From"] = sender
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if req.subject:
        msg["Subject"] = req.subject
    for name, value in req.headers.items():
        msg[name] = value
    if req.text is not None:
        msg.set_content(req.text)
    if req.html is not None:
        if req.text is None:
            msg.set_content(req.html, subtype="html")
        else:
            msg.add_alternative(req.html, subtype="html")
    for att in req.attachments:
        try:
            data = att.data()
        except ValueError as exc:
            raise ComposeError(str(exc)) from None
        maintype, subtype = att.content_type.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=att.filename)
    return msg.as_bytes()


def wire_form(raw: bytes) -> bytes:
    """`raw` with every line ending CRLF; ComposeError if it holds a NUL.

    RFC 5322 §2.3 allows CR and LF only together and no NUL; SMTP's DATA reader refuses both. An HTTP
    client commonly sends LF line endings, which stored as they are would leave a header block of mixed
    endings behind our CRLF Received field: they are made CRLF (DKIM canonicalizes line endings to CRLF
    anyway, RFC 6376 §5.3). A NUL is refused: PostgreSQL cannot store it in the text columns summarizing
    a message, so it was a misleading 503 (in a header) or a message no RFC 5322 reader expects. So is a
    line over 998 octets (RFC 5322 §2.1.1), as SMTP's DATA reader refuses it: a next hop may refuse it too,
    and the sender would learn that from a bounce, not from this request."""
    if b"\0" in raw:
        raise ComposeError("the message contains a NUL byte (RFC 5322 §2.3)")
    if len(raw) > MAX_LINE and max(map(len, raw.splitlines())) > MAX_LINE:
        raise ComposeError(f"the message has a line longer than {MAX_LINE} octets (RFC 5322 §2.1.1)")
    crlf = raw.count(b"\r\n")
    if raw.count(b"\r") == crlf and raw.count(b"\n") == crlf:
        return raw
    return _BARE_EOL.sub(b"\r\n", raw)


def envelope_of_raw(raw: bytes) -> tuple[str, list[str], bytes]:
    """(sender, recipients, bytes without Bcc) for a raw message: From must name one mailbox; the
    recipients are To, Cc and Bcc. Bcc is removed before sending (RFC 5322 §3.6.3). Line endings are
    made CRLF first (`wire_form`)."""
    raw = wire_form(raw)
    # The header block is all the envelope needs; parsing the body too recursed once per nested multipart
    # (RecursionError past a few hundred levels, a 500) for nothing.
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=True)
    if not msg.keys():
        raise ComposeError("not an RFC 5322 message")
    froms = msg.get_all("From", [])
    if len(froms) != 1:
        raise ComposeError("From must appear once")
    sender = _address_of(" ".join(str(froms[0]).split()), "From")  # unfolded (RFC 5322 §2.2.3)
    recipients: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        for value in msg.get_all(name, []):
            for clean in _mailboxes(" ".join(str(value).split()), name, empty_group=True):
                if clean.lower() not in (r.lower() for r in recipients):
                    recipients.append(clean)
    if not recipients:
        raise ComposeError("no recipients in To, Cc or Bcc")
    if "Bcc" in msg:
        raw = _drop_header(raw, b"bcc")
    return sender, recipients, raw


def _drop_header(raw: bytes, name: bytes) -> bytes:
    """Remove every field `name` (with its folded lines) from the header block, leaving the rest as is."""
    end = raw.find(b"\r\n\r\n")
    end = end + 2 if end >= 0 else len(raw)
    out: list[bytes] = []
    skipping = False
    for line in raw[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() == name
        if not skipping:
            out.append(line)
    return b"".join(out) + raw[end:]


# --- reading ---------------------------------------------------------------------------------------------

def _attachments(msg: EmailMessage, body_parts: set[int]) -> list[EmailMessage]:
    found = []
    for part in msg.walk():
        if part.is_multipart() or id(part) in body_parts:
            continue
        if part.get_content_disposition() == "attachment" or part.get_filename() \
                or part.get_content_maintype() not in ("text", "multipart"):
            found.append(part)
    return found


def parse(raw: bytes) -> tuple[EmailMessage, EmailMessage | None, EmailMessage | None, list[EmailMessage]]:
    """(message, text part, html part, attachments) of stored bytes.

    A message nested deeper than the email package's recursive parser can go (RecursionError; SMTP
    stores such mail) is shown by its header alone: no text, html or attachments, rather than a 500."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except RecursionError:
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw, headersonly=True)
        assert isinstance(msg, EmailMessage)
        return msg, None, None, []
    assert isinstance(msg, EmailMessage)
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    chosen = {id(p) for p in (text, html) if p is not None}
    return msg, text, html, _attachments(msg, chosen)


def _content(part: EmailMessage | None) -> str | None:
    if part is None:
        return None
    try:
        return part.get_content()
    except (LookupError, ValueError):  # unknown charset, broken encoding: best effort
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None


def attachment_bytes(part: EmailMessage) -> bytes:
    """The decoded content of an attachment part."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _header_fields(msg: EmailMessage) -> list[dict[str, str]]:
    """Every header field as {name, value}, decoded where the email package can.

    Its parsers raise on some malformed values (`Message-ID: <<<x>>>` is an IndexError inside them),
    and `msg.items()` and `msg.get()` parse every field they return: such a field is shown unfolded as
    it came (undecodable bytes replaced), so one bad header neither hides the message nor is a 500."""
    fields = []
    for name, raw in msg.raw_items():
        try:
            value = str(msg.policy.header_fetch_parse(name, raw))
        except Exception:  # noqa: BLE001 - any parser failure: the field as it came
            value = " ".join(str(raw).split()).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        fields.append({"name": name, "value": value})
    return fields


def message_json(message_id: int, raw: bytes, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON view of one message: headers, text and html, and the attachment list."""
    msg, text, html, atts = parse(raw)
    headers = _header_fields(msg)

    def first(name: str) -> str | None:
        return next((h["value"] for h in headers if h["name"].lower() == name), None) or None

    return {
        "id": message_id,
        **extra,
        "subject": first("subject"),
        "from": first("from"),
        "to": first("to"),
        "cc": first("cc"),
        "date": first("date"),
        "message_id": first("message-id"),
        "headers": headers,
        "text": _content(text),
        "html": _content(html),
        "attachments": [{"index": i, "filename": p.get_filename(), "content_type": p.get_content_type(),
                         "size": len(attachment_bytes(p)),
                         "url": f"/v1/messages/{message_id}/attachments/{i}"} for i, p in enumerate(atts, 1)],
        "raw_url": f"/v1/messages/{message_id}/raw",
    }
