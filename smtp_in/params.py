"""Parsing of MAIL and RCPT arguments: the path in angle brackets and the ESMTP parameters. Sans-I/O.

Owns the syntax of `FROM:<path> [params]` and `TO:<path> [params]` (RFC 5321 §4.1.2) and of the
parameters we advertise: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET/ENVID and
NOTIFY/ORCPT (RFC 3461), AUTH (RFC 4954 §5, accepted and ignored). Whether an address may be routed is
`mailcore.address`'s decision, not this module's. Errors are `ParamError` carrying the reply to send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailcore import replies
from mailcore.address import Address, AddressError, parse_address
from mailcore.replies import Reply

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*\Z")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")
# ABNF DIGIT is ASCII 0-9 only; str.isdigit() also takes "١" (read as 1) and "²" (which int() refuses).
_DIGITS = re.compile(r"[0-9]+\Z")
# RFC 3461 §4.4: an envelope id is printable US-ASCII (graphic and space) once xtext is undone.
_ENVID = re.compile(r"[\x20-\x7e]+\Z")
MAX_ENVID = 100  # RFC 3461 §4.4
MAX_ORCPT = 500  # RFC 3461 §4.2


class ParamError(Exception):
    """A syntax problem; `reply` is what the client gets."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass
class MailArgs:
    """A parsed MAIL command. `sender` is None for the null reverse-path `<>`."""

    sender: Address | None
    size: int | None = None
    body: str | None = None
    smtputf8: bool = False
    ret: str | None = None
    envid: str | None = None


@dataclass
class RcptArgs:
    """A parsed RCPT command. `postmaster` is true for the bare `<postmaster>` (RFC 5321 §4.5.1)."""

    address: Address | None
    postmaster: bool = False
    notify: str | None = None
    orcpt: str | None = None


def split_path(arg: str, keyword: str) -> tuple[str, list[str]]:
    """`FROM:<path> A=B C` -> ("path", ["A=B", "C"]). Angle brackets are required."""
    if arg[: len(keyword) + 1].upper() != keyword + ":":
        raise ParamError(replies.SYNTAX_ERROR.with_text(f"syntax: {keyword}:<address>"))
    rest = arg[len(keyword) + 1:].lstrip(" ")
    if not rest.startswith("<"):
        raise ParamError(replies.SYNTAX_ERROR.with_text("address must be in angle brackets"))
    i, quoted = 1, False
    while i < len(rest):
        c = rest[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            break
        i += 1
    else:
        raise ParamError(replies.SYNTAX_ERROR.with_text("missing closing angle bracket"))
    path, tail = rest[1:i], rest[i + 1:]
    if tail and not tail.startswith(" "):
        raise ParamError(replies.SYNTAX_ERROR)
    return path, tail.split()


def _params(items: list[str], allowed: set[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not _KEYWORD.match(key):
            raise ParamError(replies.PARAMETER_SYNTAX)
        key = key.upper()
        if key not in allowed:
            raise ParamError(replies.PARAMETER_UNKNOWN.with_text(f"parameter {key} not recognized"))
        if key in out:
            raise ParamError(replies.PARAMETER_SYNTAX.with_text(f"duplicate parameter {key}"))
        out[key] = value if eq else None
    return out


def decimal(text: str, max_digits: int) -> int | None:
    """`text` as a number if it is 1 to `max_digits` ASCII digits, else None. For SIZE= and BDAT's size:
    a Unicode digit must be a syntax error, not a different number or an exception from int()."""
    if len(text) > max_digits or not _DIGITS.match(text):
        return None
    return int(text)


def decode_xtext(value: str) -> str:
    """RFC 3461 §4: `+XX` hex escapes; anything else outside printable ASCII is an error."""
    if not _XTEXT.match(value):
        raise ParamError(replies.PARAMETER_SYNTAX.with_text("invalid xtext"))
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse_mail(arg: str, *, esmtp: bool, utf8_allowed: bool) -> MailArgs:
    """Parse the argument of MAIL."""
    path, items = split_path(arg, "FROM")
    if items and not esmtp:
        raise ParamError(replies.PARAMETER_UNKNOWN.with_text("parameters need EHLO"))
    params = _params(items, {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"})
    args = MailArgs(sender=None)
    if "SIZE" in params:
        size = decimal(params["SIZE"] or "", 20)
        if size is None:
            raise ParamError(replies.PARAMETER_SYNTAX.with_text("invalid SIZE"))
        args.size = size
    if "BODY" in params:
        body = (params["BODY"] or "").upper()
        if body not in ("7BIT", "8BITMIME"):
            raise ParamError(replies.PARAMETER_SYNTAX.with_text("BODY must be 7BIT or 8BITMIME"))
        args.body = body
    if "SMTPUTF8" in params:
        if params["SMTPUTF8"] is not None or not utf8_allowed:
            raise ParamError(replies.PARAMETER_SYNTAX.with_text("invalid SMTPUTF8"))
        args.smtputf8 = True
    if "RET" in params:
        ret = (params["RET"] or "").upper()
        if ret not in ("FULL", "HDRS"):
            raise ParamError(replies.PARAMETER_SYNTAX.with_text("RET must be FULL or HDRS"))
        args.ret = ret
    if "ENVID" in params:
        envid = decode_xtext(params["ENVID"] or "")
        # Controls would reach the queue (NUL: the commit fails; CR LF: the next hop's MAIL line).
        if not _ENVID.match(envid) or len(envid) > MAX_ENVID:
            raise ParamError(replies.PARAMETER_SYNTAX.with_text("invalid ENVID"))
        args.envid = envid
    if path:
        args.sender = _address(path, args.smtputf8)
    return args


def parse_rcpt(arg: str, *, esmtp: bool, smtputf8: bool) -> RcptArgs:
    """Parse the argument of RCPT."""
    path, items = split_path(arg, "TO")
    if items and not esmtp:
        raise ParamError(replies.PARAMETER_UNKNOWN.with_text("parameters need EHLO"))
    params = _params(items, {"NOTIFY", "ORCPT"})
    args = RcptArgs(address=None)
    if "NOTIFY" in params:
        values = [v.strip().upper() for v in (params["NOTIFY"] or "").split(",")]
        if values == ["NEVER"]:
            args.notify = "NEVER"
        elif values and all(v in ("SUCCESS", "FAILURE", "DELAY") for v in values) \
                and len(set(values)) == len(values):
            args.notify = ",".join(values)
        else:
            raise ParamError(replies.PARAMETER_SYNTAX.with_text("invalid NOTIFY"))
    if "ORCPT" in params:
        raw = params["ORCPT"] or ""
        addr_type, semi, value = raw.partition(";")
        if not semi or not _KEYWORD.match(addr_type) or len(raw) > MAX_ORCPT:
            raise ParamError(replies.PARAMETER_SYNTAX.with_text("invalid ORCPT"))
        # RFC 6533 §3: utf-8 address type is unitext, not xtext; we keep it only if printable.
        decoded = value if addr_type.lower() == "utf-8" else decode_xtext(value)
        if not decoded or any(c < " " or c == "\x7f" for c in decoded):
            raise ParamError(replies.PARAMETER_SYNTAX.with_text("invalid ORCPT"))
        args.orcpt = f"{addr_type.lower()};{decoded}"
    if path.lower() == "postmaster":
        args.postmaster = True
        return args
    args.address = _address(path, smtputf8)
    return args


def _address(path: str, smtputf8: bool) -> Address:
    try:
        addr = parse_address(path)
    except AddressError as exc:
        # AddressError texts are ours and safe to show (mailcore.address promises that).
        raise ParamError(replies.MAILBOX_NAME_NOT_ALLOWED.with_text(f"address not accepted: {exc}")) from None
    if not smtputf8 and not path.isascii():
        raise ParamError(replies.SMTPUTF8_REQUIRED)
    return addr
