"""BODY and BODYSTRUCTURE wire text for an entity tree (RFC 3501 §7.4.2, RFC 9051 §7.5.2).

Owns: the field order, defaults, NIL-vs-"" choices and extension data. The extensible form
(BODYSTRUCTURE) carries MD5 (always NIL: we do not compute Content-MD5), disposition, language and
location; the basic form (BODY) stops after the line count.
Must not: parse bytes (structure.py did) or raise.
"""

from __future__ import annotations

from mailcore.mime.envelope import envelope
from mailcore.mime.headers import HeaderBlock, strip_comments
from mailcore.mime.structure import Entity
from mailcore.mime.wire import nstring, plist, string, to_text

# RFC 3501 §9 body: a multipart needs at least one part; Dovecot sends an empty text part.
_EMPTY_PART = '("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0{ext})'


# RFC 3501 §9 body-type-msg: a "message" "rfc822" part is followed by an envelope, a body and a line count,
# so one the walk did not open (a base64 or quoted-printable encoding, RFC 2046 §5.2.1 forbids them; or
# nested past MAX_DEPTH) cannot be sent under its own type: "message" "rfc822" NIL NIL NIL "base64" 60
# NIL ... puts the MD5 where a client's parser wants the envelope. It goes as the opaque bytes it is, as
# a multipart nested too deep does; the stored part list keeps its real type.
_MESSAGE_TYPES = ("message/rfc822", "message/global")
_OPAQUE_MESSAGE = ("application", "octet-stream")


def count_lines(raw: bytes, start: int, end: int) -> int:
    """Lines in raw[start:end]: LFs, plus a last line without one."""
    if end <= start:
        return 0
    lines = raw.count(b"\n", start, end)
    if raw[end - 1] != 0x0A:
        lines += 1
    return lines


def _params(params: list[tuple[str, str]]) -> str:
    items: list[str] = []
    for key, value in params:
        items.append(string(key))
        items.append(string(value))
    return plist(items)


def _field(header: HeaderBlock, name: str) -> str | None:
    value = header.get(name)
    return None if value is None else to_text(value)


def _extension(ent: Entity) -> str:
    # RFC 3501 §9 body-ext-1part / body-ext-mpart after MD5: disposition, language, location
    disp = ent.disposition
    disp_s = "NIL" if disp is None else "(" + string(disp[0]) + " " + _params(disp[1]) + ")"
    lang = _field(ent.header, "content-language")
    if lang is None:
        lang_s = "NIL"
    else:
        tags = [t.strip() for t in strip_comments(lang).split(",") if t.strip()]
        lang_s = "NIL" if not tags else string(tags[0]) if len(tags) == 1 else plist([string(t) for t in tags])
    loc = _field(ent.header, "content-location")
    loc_s = "NIL" if loc is None else string("".join(loc.split()))  # RFC 2557 §4.3: unfold
    return f" {disp_s} {lang_s} {loc_s}"


def render_both(raw: bytes, ent: Entity) -> tuple[str, str]:
    """(BODY, BODYSTRUCTURE) of `ent`, in one walk: the extensible form is the basic one with the
    extension data added to each part, so every field they share is rendered once."""
    if ent.is_multipart:
        rendered = [render_both(raw, c) for c in ent.children]
        basic = "".join(b for b, _ in rendered)
        full = "".join(f for _, f in rendered)
        if not rendered:
            basic = _EMPTY_PART.format(ext="")
            full = _EMPTY_PART.format(ext=" NIL NIL NIL NIL")
        subtype = string(ent.subtype)
        ext = " " + _params(ent.params) + _extension(ent)
        return f"({basic} {subtype})", f"({full} {subtype}{ext})"
    main, subtype = ent.type, ent.subtype
    if ent.message is None and ent.content_type in _MESSAGE_TYPES:
        main, subtype = _OPAQUE_MESSAGE
    head = " ".join([
        string(main),
        string(subtype),
        _params(ent.params),
        nstring(_field(ent.header, "content-id")),
        nstring(_field(ent.header, "content-description")),
        string(ent.encoding),
        str(ent.body_end - ent.body_start),
    ])
    basic = full = head
    if ent.message is not None:
        # RFC 3501 §7.4.2: message/rfc822 adds the envelope, body structure and line count
        env = envelope(ent.message.header)
        inner_basic, inner_full = render_both(raw, ent.message)
        lines = str(count_lines(raw, ent.body_start, ent.body_end))
        basic = f"{head} {env} {inner_basic} {lines}"
        full = f"{head} {env} {inner_full} {lines}"
    elif ent.type == "text":
        basic = full = f"{head} {count_lines(raw, ent.body_start, ent.body_end)}"
    md5 = _field(ent.header, "content-md5")
    full += " " + nstring(md5.strip() if md5 is not None else None) + _extension(ent)
    return "(" + basic + ")", "(" + full + ")"
