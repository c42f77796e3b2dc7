"""The Authentication-Results header field (RFC 8601) we add, and the removal of forged ones.

It owns formatting results as `authserv-id; method=result property=value ...` and RFC 8601 §5: removing
incoming Authentication-Results fields that claim to come from our own authserv-id. Every value taken
from a peer (addresses, domains, reasons) passes through `mailcore.headers.safe_header_value` and is
quoted when it is not a plain token, so nothing a peer sends can end the line or inject a field.
It must not evaluate anything: it reports results computed elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailcore.auth.arc import ARCResult
from mailcore.auth.dkim import DKIMResult
from mailcore.auth.dmarc import DMARCResult
from mailcore.auth.spf import SPFResult
from mailcore.headers import safe_header_value, split_header_block

FIELD = "Authentication-Results"
# RFC 2045 token characters; also "@" and "." for the pvalue forms of RFC 8601 §2.2
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`{|}~@]+$")


# A peer's value longer than this (a DKIM d= folded over thousands of lines, a 60 KB MAIL FROM) is cut
# and marked "...": no real domain (253), path (256, RFC 5321 §4.5.3.1.3) or selector needs more.
MAX_VALUE = 256
# The whole value stays under this: smtp_in cuts the field at 4000 characters, which lost DMARC's and
# ARC's results after a few long DKIM results. DKIM results that do not fit are summed up in one.
MAX_LENGTH = 3800


def _value(text: str) -> str:
    """A property value: as is when it is token-like, else an RFC 2045 quoted-string; cut to MAX_VALUE."""
    text = safe_header_value(text).strip()
    if len(text) > MAX_VALUE:
        text = text[:MAX_VALUE] + "..."
    elif text and _TOKEN.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dkim_part(result: DKIMResult) -> str:
    """One DKIM result with its reason (unless a pass) and header.d/i/s/a properties."""
    if result.result == "none":
        return "dkim=none"
    text = f"dkim={result.result}"
    if result.result != "pass" and result.reason:
        text += f" reason={_value(result.reason[:120])}"
    props = [("header.d", result.domain), ("header.s", result.selector), ("header.a", result.algorithm)]
    if result.identity:
        props.insert(1, ("header.i", result.identity))
    return text + "".join(f" {name}={_value(value)}" for name, value in props if value)


def _comment(text: str) -> str:
    """A comment (RFC 5322 §3.2.2) of at most 200 characters of `text`, cut before escaping: a cut after
    it could keep the backslash of an escaped "(" and lose the "(", leaving "\\" to escape the closing
    ")", so that everything after it (DKIM, DMARC) was inside an unclosed comment."""
    text = safe_header_value(text).strip()[:200]
    if not text:
        return ""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")  # each of ( ) \ gets a \
    return f" ({escaped})"


def authentication_results(authserv_id: str, spf: SPFResult | None, dkim: Sequence[DKIMResult],
                           dmarc: DMARCResult | None, arc: ARCResult | None, *, mail_from: str = "",
                           helo: str = "", dmarc_disposition: str = "",
                           helo_spf: SPFResult | None = None) -> str:
    """The value of an Authentication-Results field (one line, no field name).

    `mail_from` and `helo` are what the client said (smtp.mailfrom / smtp.helo); `dmarc_disposition`
    is what we did about DMARC (shown in a comment). `helo_spf`, the separate check of the HELO
    identity (RFC 7208 §2.3), is reported as a second spf result with smtp.helo."""
    parts = [_value(authserv_id)]
    if spf is not None:
        if spf.identity == "helo" or not mail_from:
            prop = f"smtp.helo={_value(helo or spf.domain)}"
        else:
            prop = f"smtp.mailfrom={_value(mail_from)}"
        parts.append(f"spf={spf.result}{_comment(spf.smtp_comment)} {prop}")
    if helo_spf is not None and helo:
        parts.append(f"spf={helo_spf.result}{_comment(helo_spf.smtp_comment)} smtp.helo={_value(helo)}")
    dkim_at = len(parts)
    if dmarc is not None:
        text = f"dmarc={dmarc.result}"
        if dmarc.record is not None:
            note = f"p={dmarc.published_policy}"
            if dmarc_disposition:
                note += f" dis={dmarc_disposition}"
            text += _comment(note)
        if dmarc.from_domain:
            text += f" header.from={_value(dmarc.from_domain)}"
        parts.append(text)
    if arc is not None:
        parts.append(f"arc={arc.result}")
    parts[dkim_at:dkim_at] = _dkim_parts(dkim, MAX_LENGTH - len("; ".join(parts)))
    return "; ".join(parts)


def _dkim_parts(dkim: Sequence[DKIMResult], room: int) -> list[str]:
    """The DKIM results, in order, as many as fit in `room` characters; the rest summed up in one."""
    if not dkim:
        return ["dkim=none"]
    shown: list[str] = []
    for index, result in enumerate(dkim):
        part = _dkim_part(result)
        rest = len(dkim) - index - 1
        if len(part) + 2 > room - (60 if rest else 0):
            return [*shown, f'dkim=policy reason="{len(dkim) - index} more results not shown"']
        shown.append(part)
        room -= len(part) + 2
    return shown


def header_field(value: str) -> bytes:
    """`Authentication-Results: <value>` folded before each result, CRLF-terminated."""
    folded = re.sub(r"; (?=[a-z0-9-]+=)", ";\r\n\t", safe_header_value(value))
    return f"{FIELD}: {folded}\r\n".encode()


def _skip_cfws(value: str, i: int) -> int:
    """The index of the first character at or after `i` that is neither white space nor in a comment
    (RFC 5322 §3.2.2: nested, with quoted-pairs). One pass: removing innermost comments again and again
    was quadratic in the nesting depth (a forged field of 15,000 nested comments: seconds on the loop)."""
    depth = 0
    while i < len(value):
        char = value[i]
        if depth and char == "\\":
            i += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and not char.isspace():
            return i
        i += 1
    return i


def _authserv_id(value: str) -> str:
    """The authserv-id of an Authentication-Results value (RFC 8601 §2.2): after any CFWS, a quoted-string
    or the text up to white space, ';' or a comment."""
    start = _skip_cfws(value, 0)
    text = value[start:]
    if text.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"', text)
        return re.sub(r"\\(.)", r"\1", match.group(1)) if match else ""
    return re.split(r"[\s;(]", text, maxsplit=1)[0]


def remove_own_results(raw: bytes, authserv_id: str) -> bytes:
    """`raw` without any Authentication-Results field carrying our authserv-id (case-insensitive).

    RFC 8601 §5: a field claiming to be ours before we added one is forged; others stay untouched,
    and every other byte of the message is kept as it was."""
    fields, rest = split_header_block(raw)
    ours = authserv_id.strip().lower()
    kept = [f.raw for f in fields
            if not (f.name.lower() == FIELD.lower() and _authserv_id(f.value).lower() == ours)]
    return b"".join(kept) + rest
