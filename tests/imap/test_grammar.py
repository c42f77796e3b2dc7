"""Command grammar: the RFCs' example commands and tables of good and bad input."""

from datetime import date, datetime, timedelta, timezone

import pytest

from imap.commands import (
    And,
    Append,
    Authenticate,
    BadCommand,
    Copy,
    Create,
    Enable,
    Expunge,
    FetchAtt,
    Id,
    Key,
    List,
    Login,
    MailboxCommand,
    Not,
    Or,
    Rename,
    Search,
    Section,
    Select,
    Simple,
    Status,
    Store,
)
from imap.grammar import Options, parse_command
from imap.sequence import parse as seq


def p(line: bytes):
    return parse_command(line + b"\r\n")


@pytest.mark.parametrize(
    "line",
    [
        # RFC 3501 §6 examples
        b"abcd CAPABILITY",
        b"a002 NOOP",
        b"A023 LOGOUT",
        b"a001 STARTTLS",
        b"FXXZ CHECK",
        b"A341 CLOSE",
        b"A202 EXPUNGE",
        b"A01 NAMESPACE",  # RFC 2342
        b"a047 IDLE",  # RFC 2177
        b"a UNSELECT",  # RFC 3691
        b"a002 noop",
        b"a NOOP ",  # trailing blank tolerated
    ],
)
def test_simple(line: bytes) -> None:
    cmd = p(line)
    assert isinstance(cmd, Simple | Expunge), cmd
    assert cmd.name == line.split()[1].decode().upper()


def test_login_forms() -> None:
    assert p(b"a001 LOGIN SMITH SESAME") == Login(tag="a001", name="LOGIN", username="SMITH", password="SESAME")
    assert p(b'a LOGIN "fred" "pass word"').password == "pass word"
    assert p(b'a LOGIN "a\\"b" "c\\\\d"') == Login(tag="a", name="LOGIN", username='a"b', password="c\\d")
    assert p(b"a LOGIN {4}\r\nfred {3+}\r\nabc").password == "abc"
    assert p(b"a LOGIN fred]x pw").username == "fred]x"  # astring allows "]"


def test_authenticate() -> None:
    assert p(b"A001 AUTHENTICATE GSSAPI") == Authenticate(tag="A001", name="AUTHENTICATE", mechanism="GSSAPI")
    cmd = p(b"a authenticate plain AGZyZWQAc2VjcmV0")  # RFC 4959 SASL-IR
    assert cmd == Authenticate(tag="a", name="AUTHENTICATE", mechanism="PLAIN", initial_response=b"AGZyZWQAc2VjcmV0")
    assert p(b"a AUTHENTICATE PLAIN =").initial_response == b"="


def test_select_examine() -> None:
    assert p(b"A142 SELECT INBOX") == Select(tag="A142", name="SELECT", mailbox="INBOX")
    assert p(b'A SELECT "inbox"').mailbox == "INBOX"  # RFC 3501 §5.1
    assert p(b"A932 EXAMINE blurdybloop").readonly
    cmd = p(b"A SELECT INBOX (CONDSTORE)")
    assert cmd.params == (("CONDSTORE", None),)
    cmd = p(b"A SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))")
    assert cmd.params[0][0] == "QRESYNC"
    assert p(b"A SELECT ~peter/mail/&U,BTFw-/&ZeVnLIqe-").mailbox == "~peter/mail/台北/日本語"


def test_mailbox_commands() -> None:
    assert p(b"A003 CREATE owatagusiam/") == Create(tag="A003", name="CREATE", mailbox="owatagusiam/")
    assert p(b"t CREATE MySpecialArchive (USE (\\Archive))").special_use == ("\\Archive",)
    assert p(b"A683 DELETE blurdybloop") == MailboxCommand(tag="A683", name="DELETE", mailbox="blurdybloop")
    assert p(b"A683 RENAME blurdybloop sarasoop") == Rename(tag="A683", name="RENAME", old="blurdybloop", new="sarasoop")
    assert p(b"A002 SUBSCRIBE #news.comp.mail.mime").mailbox == "#news.comp.mail.mime"
    assert p(b"A002 UNSUBSCRIBE #news.comp.mail.mime").name == "UNSUBSCRIBE"
    assert p(b"G GETQUOTAROOT INBOX").mailbox == "INBOX"
    assert p(b'G GETQUOTA ""').root == "" and p(b"G GETQUOTA &AOk-").root == "&AOk-"  # a root, not a mailbox
    assert p(b'A042 STATUS blurdybloop (UIDNEXT MESSAGES)') == Status(
        tag="A042", name="STATUS", mailbox="blurdybloop", items=("UIDNEXT", "MESSAGES"))


def test_list_forms() -> None:
    assert p(b'A101 LIST "" ""') == List(tag="A101", name="LIST", reference="", patterns=("",))
    assert p(b'A102 LIST #news.comp.mail.misc ""').reference == "#news.comp.mail.misc"
    assert p(b'A103 LIST /usr/staff/jones ""').patterns == ("",)
    assert p(b"A202 LIST ~/Mail/ %").patterns == ("%",)
    cmd = p(b'A LIST (SUBSCRIBED) "" "*"')  # Thunderbird
    assert cmd.selection == {"SUBSCRIBED"} and cmd.extended
    cmd = p(b'A02 LIST (SUBSCRIBED REMOTE) "" ("INBOX" "Drafts" "Sent/%") RETURN (CHILDREN SPECIAL-USE)')
    assert cmd.patterns == ("INBOX", "Drafts", "Sent/%")
    assert cmd.returns == {"CHILDREN", "SPECIAL-USE"}
    cmd = p(b'A LIST "" % RETURN (STATUS (MESSAGES UNSEEN))')  # RFC 5819
    assert cmd.returns == {"STATUS"} and cmd.status_items == ("MESSAGES", "UNSEEN")
    assert p(b'A002 LSUB "#news." "comp.mail.*"').selection == {"SUBSCRIBED"}
    assert p(b"A LIST \"\" INBOX]").patterns == ("INBOX]",)


def test_append() -> None:
    msg = b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nSubject: afternoon meeting\r\n\r\nHello Joe\r\n"
    line = b'A003 APPEND saved-messages (\\Seen) {%d}\r\n' % len(msg) + msg
    cmd = p(line)
    assert isinstance(cmd, Append) and cmd.mailbox == "saved-messages"
    assert cmd.messages[0].flags == ("\\Seen",) and cmd.messages[0].message == msg
    cmd = p(b'A APPEND "Sent" (\\Seen) "07-Feb-1994 21:52:25 -0800" {3+}\r\nabc')
    assert cmd.messages[0].date == datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(-timedelta(hours=8)))
    assert p(b'A APPEND x " 7-Feb-1994 21:52:25 +0000" {1}\r\na').messages[0].date.day == 7
    assert p(b"A APPEND x {1+}\r\na").messages[0].flags == ()
    cmd = p(b"A APPEND x (\\Seen) {1+}\r\na (\\Draft $Label1) {2+}\r\nbc")  # RFC 3502
    assert [m.message for m in cmd.messages] == [b"a", b"bc"]
    assert p(b"A APPEND x ~{3+}\r\na\x00b").messages[0].binary  # RFC 3516 literal8
    assert p(b"A APPEND x () {1+}\r\na").messages[0].flags == ()


def test_search_keys() -> None:
    cmd = p(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"')
    assert cmd == Search(tag="A282", name="SEARCH", criteria=And((
        Key("FLAGGED"), Key("SINCE", date(1994, 2, 1)), Not(Key("FROM", "Smith")))))
    cmd = p(b"A283 SEARCH TEXT \"string not in mailbox\"")
    assert cmd.criteria.keys == (Key("TEXT", "string not in mailbox"),)
    cmd = p(b"A284 SEARCH CHARSET UTF-8 TEXT {6}\r\nXXXXXX")
    assert cmd.charset == "UTF-8"
    cmd = p(b"A SEARCH OR (FROM a SEEN) (TO b) HEADER Received \"x\" UID 1:3 2,4:* LARGER 100")
    keys = cmd.criteria.keys
    assert keys[0] == Or(And((Key("FROM", "a"), Key("SEEN"))), And((Key("TO", "b"),)))
    assert keys[1] == Key("HEADER", ("Received", "x"))
    assert keys[2] == Key("UID", seq("1:3")) and keys[3] == Key("SEQSET", seq("2,4:*"))
    assert p(b'A SEARCH SENTBEFORE "1-Jan-2020"').criteria.keys[0].value == date(2020, 1, 1)
    assert p(b"A UID SEARCH RETURN (MIN COUNT) UNSEEN").returns == ("MIN", "COUNT")
    assert p(b"A UID SEARCH RETURN () ALL").returns == ()
    assert p(b"A SEARCH KEYWORD $Forwarded").criteria.keys[0] == Key("KEYWORD", "$Forwarded")
    assert p(b"A SEARCH MODSEQ 620162338").criteria.keys[0] == Key("MODSEQ", 620162338)
    assert p(b'A SEARCH MODSEQ "/flags/\\\\draft" all 620162338').criteria.keys[0].value == 620162338
    assert p(b"A SEARCH CHARSET ISO-8859-1 SUBJECT {1}\r\n\xe9").criteria.keys[0].value == "\u00e9"
    assert p(b"A SEARCH $").criteria.keys[0] == Key("SEQSET", seq("$"))
    all_keys = (b"ALL ANSWERED BCC x BEFORE 1-Jan-2000 BODY x CC x DELETED DRAFT FLAGGED FROM x "
                b"HEADER x y KEYWORD k LARGER 1 NEW NOT SEEN OLD ON 1-Jan-2000 OR SEEN SEEN RECENT SEEN "
                b"SENTBEFORE 1-Jan-2000 SENTON 1-Jan-2000 SENTSINCE 1-Jan-2000 SINCE 1-Jan-2000 SMALLER 1 "
                b"SUBJECT x TEXT x TO x UID 1 UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD k UNSEEN 1:2 "
                b"OLDER 5 YOUNGER 5")
    assert len(p(b"A SEARCH " + all_keys).criteria.keys) == 38


def test_fetch_forms() -> None:
    cmd = p(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
    assert cmd.sequence == seq("2:4")
    assert cmd.attributes == (FetchAtt("FLAGS"), FetchAtt("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM"))))
    assert cmd.attributes[1].response_name() == "BODY[HEADER.FIELDS (DATE FROM)]"
    assert [a.name for a in p(b"a FETCH 1 ALL").attributes] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"]
    assert [a.name for a in p(b"a FETCH 1 fast").attributes] == ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]
    assert p(b"a FETCH 1 FULL").attributes[-1] == FetchAtt("BODY")
    att = p(b"a FETCH 1 BODY.PEEK[1.2.3.MIME]<10.20>").attributes[0]
    assert att == FetchAtt("BODY", Section((1, 2, 3), "MIME"), (10, 20), True)
    assert att.response_name() == "BODY[1.2.3.MIME]<10>" and not att.sets_seen
    assert p(b"a FETCH 1 BODY[]").attributes[0].sets_seen
    assert p(b"a FETCH 1 body[2.header.fields.not (X-A {3}\r\nX-B)]").attributes[0].section == Section(
        (2,), "HEADER.FIELDS.NOT", ("X-A", "X-B"))
    assert p(b"a FETCH 1 BODY[4.2.TEXT]").attributes[0].section == Section((4, 2), "TEXT")
    assert p(b"a FETCH 1 BINARY.PEEK[1]<0.10>").attributes[0] == FetchAtt("BINARY", Section((1,)), (0, 10), True)
    assert p(b"a FETCH 1 BINARY.SIZE[2]").attributes[0].name == "BINARY.SIZE"
    cmd = p(b"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert cmd.uid and cmd.changedsince == 12345 and cmd.vanished
    names = b"ENVELOPE FLAGS INTERNALDATE RFC822 RFC822.HEADER RFC822.SIZE RFC822.TEXT BODY BODYSTRUCTURE UID MODSEQ"
    assert len(p(b"a FETCH 1 (" + names + b")").attributes) == 11
    tb = (b"UID FETCH 1:40 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
          b"Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To Received)])")
    assert len(p(b"7 " + tb).attributes[3].section.fields) == 15


def test_store_copy_move_expunge() -> None:
    cmd = p(b"A003 STORE 2:4 +FLAGS (\\Deleted)")
    assert cmd == Store(tag="A003", name="STORE", sequence=seq("2:4"), mode="add", flags=("\\Deleted",))
    cmd = p(b"a uid store 5 -Flags.silent (\\seen $Junk)")
    assert cmd.uid and cmd.mode == "remove" and cmd.silent and cmd.flags == ("\\Seen", "$Junk")
    assert p(b"a STORE 1 FLAGS \\Seen \\Answered").flags == ("\\Seen", "\\Answered")
    assert p(b"a STORE 1 FLAGS ()").flags == ()
    assert p(b"a STORE 1 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)").unchangedsince == 320162338
    assert p(b"A003 COPY 2:4 MEETING") == Copy(tag="A003", name="COPY", sequence=seq("2:4"), mailbox="MEETING")
    cmd = p(b'a UID MOVE 42 "Trash"')
    assert cmd.name == "MOVE" and cmd.uid and cmd.mailbox == "Trash"
    assert p(b"A003 UID EXPUNGE 3000:3002") == Expunge(tag="A003", name="EXPUNGE", uid=True, uids=seq("3000:3002"))


def test_enable_id() -> None:
    assert p(b"t2 ENABLE CONDSTORE X-GOOD-IDEA") == Enable(tag="t2", name="ENABLE", capabilities=("CONDSTORE", "X-GOOD-IDEA"))
    assert p(b'a023 ID ("name" "sodr" "version" "19.34" "vendor" NIL)').params == {
        "name": "sodr", "version": "19.34", "vendor": None}
    assert p(b"a ID NIL") == Id(tag="a", name="ID", params=None)


def test_utf8_names_option() -> None:
    cmd = parse_command(b"a SELECT \"Entw\xc3\xbcrfe\"\r\n", Options(utf8_names=True))
    assert cmd.mailbox == "Entwürfe"


@pytest.mark.parametrize(
    ("line", "tag"),
    [
        (b"", "*"),
        (b"NOOP", "NOOP"),  # a lone word is read as a tag
        (b"+ NOOP", "*"),
        (b"a", "a"),
        (b"a FROBNICATE", "a"),
        (b"a NOOP extra", "a"),
        (b"a LOGIN fred", "a"),
        (b"a LOGIN", "a"),
        (b'a LOGIN "fred pw', "a"),
        (b'a LOGIN "a\\x" b', "a"),
        (b"a SELECT", "a"),
        (b"a SELECT &Jjo!", "a"),
        (b"a SELECT INBOX (", "a"),
        (b"a UID NOOP", "a"),
        (b"a FETCH 0 FLAGS", "a"),
        (b"a FETCH 1", "a"),
        (b"a FETCH 1 (FLAGS", "a"),
        (b"a FETCH 1 BODY[1.]", "a"),
        (b"a FETCH 1 BODY[MIME]", "a"),
        (b"a FETCH 1 BODY[0]", "a"),
        (b"a FETCH 1 BODY[HEADER.FIELDS ()]", "a"),
        (b"a FETCH 1 BODY[]<0.0>", "a"),
        (b"a FETCH 1 BINARY[1.TEXT]", "a"),
        (b"a FETCH 1 FOO", "a"),
        (b"a FETCH 1:x FLAGS", "a"),
        (b"a FETCH 1 FLAGS (SOMETHING)", "a"),
        (b"a STORE 1 FLAG (\\Seen)", "a"),
        (b"a STORE 1 +FLAGS (\\*)", "a"),
        (b"a STORE 1 +FLAGS", "a"),
        (b"a SEARCH", "a"),
        (b"a SEARCH FROM", "a"),
        (b"a SEARCH SINCE 31-Feb-2000", "a"),
        (b"a SEARCH SINCE 1-Foo-2000", "a"),
        (b"a SEARCH BOGUS", "a"),
        (b"a SEARCH (SEEN", "a"),
        (b"a SEARCH OR SEEN", "a"),
        (b"a SEARCH " + b"(" * 100 + b"SEEN" + b")" * 100, "a"),
        (b"a APPEND INBOX", "a"),
        (b"a APPEND INBOX (\\Seen)", "a"),
        (b'a APPEND INBOX "bad date" {1}\r\nx', "a"),
        (b"a APPEND INBOX {5}\r\nabc", "a"),
        (b"a STATUS INBOX ()", "a"),
        (b"a LIST", "a"),
        (b"a LIST \"\"", "a"),
        (b"a LIST \"\" () ", "a"),
        (b"a LIST \"\" * RETURN", "a"),
        (b"a ENABLE", "a"),
        (b"a ID (\"k\")", "a"),
        (b"a COPY 1", "a"),
        (b"a UID EXPUNGE", "a"),
        (b"a LOGIN {3}\r\na\x00b pw", "a"),
        (b"a CAPABILITY\x00", "a"),
    ],
)
def test_bad(line: bytes, tag: str) -> None:
    cmd = p(line)
    assert isinstance(cmd, BadCommand), cmd
    assert cmd.tag == tag
    assert "\r" not in cmd.text and "\n" not in cmd.text


def test_badcharset_code() -> None:
    assert p(b"a SEARCH CHARSET X-UNKNOWN ALL").charset_supported is False  # NO [BADCHARSET] in the handler
