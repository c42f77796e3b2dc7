"""Command grammar: one complete command's bytes in, a typed `Command` or a `BadCommand` out.

Owns: RFC 3501 §6 / RFC 9051 §6 argument syntax per command, plus the extensions we accept
(LITERAL+, SASL-IR, LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, UIDPLUS, MOVE, IDLE, ENABLE, ID,
CONDSTORE modifiers, ESEARCH, MULTIAPPEND, BINARY, QUOTA). Must not: do I/O, keep state, or raise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from imap import utf7
from imap.arguments import fetch_atts, search_program, sequence_set
from imap.commands import (
    Append,
    AppendMessage,
    Authenticate,
    BadCommand,
    Command,
    Copy,
    Create,
    Enable,
    Expunge,
    Fetch,
    GetQuota,
    Id,
    List,
    Login,
    MailboxCommand,
    Rename,
    Search,
    Select,
    Simple,
    Status,
    Store,
)
from imap.reader import SYSTEM_FLAGS, ParseError, Reader

_TAG = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\+]+")


@dataclass(frozen=True, slots=True)
class Options:
    """Per-session switches the grammar needs."""

    utf8_names: bool = False  # RFC 6855 UTF8=ACCEPT enabled: names are UTF-8, not modified UTF-7


def split_tag(data: bytes) -> tuple[str | None, str | None, bool]:
    """(tag, command name upper-cased, uid) from the start of a command line, best effort."""
    m = _TAG.match(data)
    if m is None or data[m.end() : m.end() + 1] != b" ":
        return None, None, False
    tag = m.group(0).decode("ascii")
    rest = data[m.end() + 1 :]
    words = re.match(rb"([A-Za-z]+)(?: ([A-Za-z]+))?", rest)
    if words is None:
        return tag, None, False
    name = words.group(1).decode("ascii").upper()
    if name == "UID" and words.group(2):
        return tag, words.group(2).decode("ascii").upper(), True
    return tag, name, False


def mailbox_name(raw: bytes, opts: Options) -> str:
    """Decode a mailbox name; RFC 3501 §5.1: INBOX is case-insensitive."""
    if opts.utf8_names or not raw.isascii():
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("mailbox name is not valid UTF-8") from None
    else:
        try:
            name = utf7.decode(raw)
        except ValueError as e:
            raise ParseError(f"invalid mailbox name: {e}") from None
    if "\x00" in name:  # `&AAA-`: no mailbox has it, and PostgreSQL text cannot hold it
        raise ParseError("invalid mailbox name: NUL")
    return "INBOX" if name.upper() == "INBOX" else name


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _pattern(raw: bytes, opts: Options) -> str:
    if opts.utf8_names or not raw.isascii():
        return raw.decode("utf-8", "replace")
    try:
        return utf7.decode(raw)
    except ValueError:
        return raw.decode("ascii")  # a pattern matching nothing is harmless


_NO_ARGS = frozenset({"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT",
                      "IDLE", "NAMESPACE"})
_UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE"})


def parse_command(data: bytes, opts: Options | None = None) -> Command | BadCommand:
    """Parse one command (literals inline, trailing CRLF optional). Never raises."""
    opts = opts or Options()
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    m = _TAG.match(data)
    if m is None:
        return BadCommand("*", "missing or invalid tag")
    tag = m.group(0).decode("ascii")
    r = Reader(data, m.end())
    try:
        r.sp()
        name = r.atom("a command name").upper()
        uid = False
        if name == "UID":
            r.sp()
            name = r.atom("a command name").upper()
            uid = True
            if name not in _UID_COMMANDS:
                raise ParseError(f"UID {name[:20]} is not a command")
        handler = _HANDLERS.get(name)
        if handler is None:
            return BadCommand(tag, f"unknown command {name[:20]}")
        cmd = handler(r, tag, name, uid, opts)
        r.end()
        return cmd
    except ParseError as e:
        return BadCommand(tag, e.text, e.code)
    except (ValueError, RecursionError, IndexError):
        return BadCommand(tag, "invalid arguments")


Handler = Callable[[Reader, str, str, bool, Options], Command]


def _simple(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    return Simple(tag=tag, name=name)


def _expunge(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    if not uid:
        return Expunge(tag=tag, name=name)
    r.sp()
    return Expunge(tag=tag, name=name, uid=True, uids=sequence_set(r))


def _login(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    user = r.astring("a user name")
    r.sp()
    password = r.astring("a password")
    return Login(tag=tag, name=name, username=_text(user), password=_text(password))


def _authenticate(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    mech = r.atom("a mechanism").upper()
    initial = None
    if r.accept(b" "):  # RFC 4959 §3: initial-response = base64 / "="
        initial = r._chars(frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="),
                           "a base64 initial response")
    return Authenticate(tag=tag, name=name, mechanism=mech, initial_response=initial)


def _mailbox(r: Reader, opts: Options) -> str:
    return mailbox_name(r.astring("a mailbox name"), opts)


def _select(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    mailbox = _mailbox(r, opts)
    params: list[tuple[str, object]] = []
    if r.accept(b" "):  # RFC 4466 §2.1 select-params, e.g. (CONDSTORE), (QRESYNC (...))
        r.expect(b"(")
        while not r.accept(b")"):
            if params:
                r.sp()
            key = r.atom("a select parameter").upper()
            value = None
            if r.accept(b" "):
                value = r.generic()
            params.append((key, value))
    return Select(tag=tag, name=name, mailbox=mailbox, readonly=name == "EXAMINE", params=tuple(params))


def _create(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    mailbox = _mailbox(r, opts)
    uses: list[str] = []
    if r.accept(b" "):  # RFC 4466 create-params; RFC 6154 §3 USE (...)
        r.expect(b"(")
        first = True
        while not r.accept(b")"):
            if not first:
                r.sp()
            first = False
            key = r.atom("a create parameter").upper()
            r.sp()
            if key == "USE":
                uses.extend(r.flag_list())
            else:
                r.generic()
    return Create(tag=tag, name=name, mailbox=mailbox, special_use=tuple(uses))


def _one_mailbox(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    return MailboxCommand(tag=tag, name=name, mailbox=_mailbox(r, opts))


def _getquota(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    return GetQuota(tag=tag, name=name, root=r.astring().decode("utf-8", "replace"))


def _rename(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    old = _mailbox(r, opts)
    r.sp()
    return Rename(tag=tag, name=name, old=old, new=_mailbox(r, opts))


def _words(r: Reader) -> list[str]:
    r.expect(b"(")
    words: list[str] = []
    while not r.accept(b")"):
        if words:
            r.sp()
        words.append(r.atom().upper())
    return words


def _list(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    selection: list[str] = []
    extended = False
    if r.peek() == b"(":  # RFC 5258 §3 list-select-opts
        selection = _words(r)
        extended = True
        r.sp()
    reference = _pattern(r.astring("a reference name"), opts)
    r.sp()
    patterns: list[str] = []
    if r.peek() == b"(" and name == "LIST":
        extended = True
        r.expect(b"(")
        while not r.accept(b")"):
            if patterns:
                r.sp()
            patterns.append(_pattern(r.list_mailbox(), opts))
        if not patterns:
            raise ParseError("empty pattern list")
    else:
        patterns.append(_pattern(r.list_mailbox(), opts))
    returns: list[str] = []
    status_items: tuple[str, ...] = ()
    if name == "LIST" and r.accept(b" "):
        if not r.accept_word(b"RETURN"):
            raise ParseError("expected RETURN")
        extended = True
        r.sp()
        r.expect(b"(")
        while not r.accept(b")"):
            if returns:
                r.sp()
            opt = r.atom("a return option").upper()
            returns.append(opt)
            if opt == "STATUS":  # RFC 5819
                r.sp()
                status_items = tuple(_words(r))
    if name == "LSUB":
        return List(tag=tag, name=name, reference=reference, patterns=tuple(patterns),
                    selection=frozenset({"SUBSCRIBED"}))
    return List(tag=tag, name=name, reference=reference, patterns=tuple(patterns),
                selection=frozenset(selection), returns=frozenset(returns), status_items=status_items,
                extended=extended)


def _status(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    mailbox = _mailbox(r, opts)
    r.sp()
    items = _words(r)
    if not items:
        raise ParseError("no status items")
    return Status(tag=tag, name=name, mailbox=mailbox, items=tuple(items))


_MESSAGE_SYSTEM_FLAGS = frozenset(SYSTEM_FLAGS.values())


def _message_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """Flags a client may give a message (STORE, APPEND): keywords and the system flags. RFC 9051 §9:
    a server MUST NOT generate flag-extensions (`\\Bogus`), so storing one would have it echoed in FLAGS."""
    for flag in flags:
        if flag.startswith("\\") and flag not in _MESSAGE_SYSTEM_FLAGS:
            raise ParseError(f"invalid system flag {flag[:30]}")
    return flags


def _append(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    mailbox = _mailbox(r, opts)
    messages: list[AppendMessage] = []
    while r.accept(b" "):  # RFC 3502: one or more messages
        flags: tuple[str, ...] = ()
        when = None
        if r.peek() == b"(":
            flags = _message_flags(r.flag_list())
            r.sp()
        if r.peek() == b'"':
            when = r.date_time()
            r.sp()
        body, binary = r.literal(binary=True)
        messages.append(AppendMessage(flags=flags, date=when, message=body, binary=binary))
    if not messages:
        raise ParseError("missing message literal")
    return Append(tag=tag, name=name, mailbox=mailbox, messages=tuple(messages))


# RFC 3501 §6.4.4: the charsets SEARCH takes, by IANA name (and the aliases clients send), with the Python
# codec for each. A list, not `codecs.lookup`: Python also knows names that are no IANA charset (rot13,
# base64, unicode_escape, idna, "undefined", which fails on every byte), and UTF-7 and UTF-16, which give
# NUL and lone surrogates no message text holds. Anything else is NO [BADCHARSET (...)].
SEARCH_CHARSETS = {
    "US-ASCII": "ascii", "ASCII": "ascii", "UTF-8": "utf-8",
    **{f"ISO-8859-{n}": f"iso8859_{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)},
    "LATIN1": "latin_1",
    **{f"WINDOWS-{n}": f"cp{n}" for n in range(1250, 1259)},
    "KOI8-R": "koi8_r", "KOI8-U": "koi8_u", "SHIFT_JIS": "shift_jis", "EUC-JP": "euc_jp",
    "ISO-2022-JP": "iso2022_jp", "GB2312": "gb2312", "GBK": "gbk", "GB18030": "gb18030", "BIG5": "big5",
    "EUC-KR": "euc_kr",
}
BADCHARSET = "BADCHARSET (US-ASCII UTF-8 " + " ".join(
    n for n in SEARCH_CHARSETS if n not in ("US-ASCII", "ASCII", "UTF-8", "LATIN1")) + ")"


def _decoder(charset: str | None) -> Callable[[bytes], str] | None:
    """The search strings' decoder for `charset`, or None when it is not one SEARCH takes."""
    name = "UTF-8" if charset is None else charset.upper()
    codec = SEARCH_CHARSETS.get(name)
    if codec is None:
        return None
    if codec == "ascii":
        codec = "utf-8"  # US-ASCII is a subset; 8-bit gets a UTF-8 reading

    def decode(raw: bytes) -> str:
        try:
            text = raw.decode(codec)
        except ValueError:
            raise ParseError("search string does not match its charset") from None
        if "\x00" in text:  # PostgreSQL text cannot hold it; no message text has it
            raise ParseError("NUL in search string")
        return text

    return decode


def _any_bytes(raw: bytes) -> str:
    """The strings of a SEARCH whose charset is refused: read only to check the syntax."""
    return raw.decode("latin-1")


def _search(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    returns = None
    if r.accept_word(b"RETURN"):  # RFC 4731 §3
        r.sp()
        returns = tuple(_words(r))
        r.sp()
    charset = None
    if r.accept_word(b"CHARSET"):
        r.sp()
        charset = r.astring("a charset").decode("ascii", "replace")
        r.sp()
    decode = _decoder(charset)
    program = search_program(r, decode or _any_bytes)
    # an unsupported charset is NO, not BAD (RFC 3501 §6.4.4): the handler refuses it after the state check
    return Search(tag=tag, name=name, uid=uid, criteria=program, charset=charset, returns=returns,
                  charset_supported=decode is not None)


def _fetch(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    seq = sequence_set(r)
    r.sp()
    atts = fetch_atts(r)
    changedsince = None
    vanished = False
    if r.accept(b" "):  # RFC 4466 fetch-modifiers; RFC 7162 CHANGEDSINCE, VANISHED
        r.expect(b"(")
        first = True
        while not r.accept(b")"):
            if not first:
                r.sp()
            first = False
            mod = r.atom("a fetch modifier").upper()
            if mod == "CHANGEDSINCE":
                r.sp()
                changedsince = r.number()
            elif mod == "VANISHED":
                vanished = True
            else:
                raise ParseError(f"unknown fetch modifier {mod[:20]}")
    return Fetch(tag=tag, name=name, uid=uid, sequence=seq, attributes=atts,
                 changedsince=changedsince, vanished=vanished)


def _store(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    seq = sequence_set(r)
    r.sp()
    unchangedsince = None
    if r.accept(b"("):  # RFC 7162 §3.1.3 store-modifiers
        mod = r.atom("a store modifier").upper()
        if mod != "UNCHANGEDSINCE":
            raise ParseError(f"unknown store modifier {mod[:20]}")
        r.sp()
        unchangedsince = r.number()
        r.expect(b")")
        r.sp()
    item = r.atom("FLAGS, +FLAGS or -FLAGS") if r.peek() not in (b"+", b"-") else None
    if item is None:
        sign = r.peek()
        r.pos += 1
        item = sign.decode() + r.atom("FLAGS")
    item = item.upper()
    silent = item.endswith(".SILENT")
    base = item[:-7] if silent else item
    modes = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}
    if base not in modes:
        raise ParseError("expected FLAGS, +FLAGS or -FLAGS")
    r.sp()
    if r.peek() == b"(":
        flags = r.flag_list()
    else:
        flags_l = [r.flag()]
        while r.accept(b" "):
            if r.at_end():
                break
            flags_l.append(r.flag())
        flags = tuple(flags_l)
    _message_flags(flags)
    return Store(tag=tag, name=name, uid=uid, sequence=seq, mode=modes[base], flags=flags,
                 silent=silent, unchangedsince=unchangedsince)


def _copy(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    seq = sequence_set(r)
    r.sp()
    return Copy(tag=tag, name=name, uid=uid, sequence=seq, mailbox=_mailbox(r, opts))


def _enable(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    caps: list[str] = []
    while r.accept(b" "):
        if r.at_end():
            break
        caps.append(r.atom("a capability").upper())
    if not caps:
        raise ParseError("missing capability")
    return Enable(tag=tag, name=name, capabilities=tuple(caps))


def _id(r: Reader, tag: str, name: str, uid: bool, opts: Options) -> Command:
    r.sp()
    if r.accept_word(b"NIL"):
        return Id(tag=tag, name=name, params=None)
    r.expect(b"(")
    params: dict[str, str | None] = {}
    while not r.accept(b")"):
        if params:
            r.sp()
        key = r.string().decode("utf-8", "replace")
        r.sp()
        value = r.nstring()
        if len(params) < 30:  # RFC 2971 §3.3: at most 30 pairs
            params[key] = None if value is None else value.decode("utf-8", "replace")
    return Id(tag=tag, name=name, params=params)


_HANDLERS: dict[str, Handler] = {
    **{n: _simple for n in _NO_ARGS},
    "EXPUNGE": _expunge,
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "SELECT": _select,
    "EXAMINE": _select,
    "CREATE": _create,
    "DELETE": _one_mailbox,
    "SUBSCRIBE": _one_mailbox,
    "UNSUBSCRIBE": _one_mailbox,
    "GETQUOTAROOT": _one_mailbox,
    "GETQUOTA": _getquota,
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _list,
    "STATUS": _status,
    "APPEND": _append,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy,
    "MOVE": _copy,
    "ENABLE": _enable,
    "ID": _id,
}
