"""MAIL/RCPT argument parsing, sans-I/O: paths, ESMTP parameters (SIZE, BODY, SMTPUTF8, DSN)."""

from __future__ import annotations

import pytest

from mailcore import replies
from smtp_in.params import ParamError, parse_mail, parse_rcpt


@pytest.mark.parametrize(("arg", "sender", "attrs"), [
    ("FROM:<a@b.example>", "a@b.example", {}),
    ("FROM: <a@b.example>", "a@b.example", {}),
    ("from:<>", None, {}),
    ("FROM:<a@b.example> SIZE=1000 BODY=8BITMIME", "a@b.example", {"size": 1000, "body": "8BITMIME"}),
    ("FROM:<a@b.example> RET=HDRS ENVID=QQ+2B1", "a@b.example", {"ret": "HDRS", "envid": "QQ+1"}),
    ("FROM:<jö@b.example> SMTPUTF8", "jö@b.example", {"smtputf8": True}),
    ("FROM:<a@b.example> AUTH=<>", "a@b.example", {}),
    # a quoted local part that needs no quotes is the same mailbox as without them (RFC 5322 §3.4.1)
    ('FROM:<"alice"@b.example>', "alice@b.example", {}),
    ('FROM:<"a.b+c"@b.example>', "a.b+c@b.example", {}),
    ('FROM:<"a,b"@b.example>', '"a,b"@b.example', {}),  # one that needs them keeps them
])
def test_mail_ok(arg: str, sender: str | None, attrs: dict[str, object]) -> None:
    args = parse_mail(arg, esmtp=True, utf8_allowed=True)
    assert (str(args.sender) if args.sender else None) == sender
    for key, value in attrs.items():
        assert getattr(args, key) == value


@pytest.mark.parametrize(("arg", "reply"), [
    ("FROM:a@b.example", replies.SYNTAX_ERROR),
    ("TO:<a@b.example>", replies.SYNTAX_ERROR),
    ("FROM:<a@b.example", replies.SYNTAX_ERROR),
    ("FROM:<a@b.example>SIZE=1", replies.SYNTAX_ERROR),
    ("FROM:<a@b.example> SIZE=x", replies.PARAMETER_SYNTAX),
    ("FROM:<a@b.example> SIZE=1 SIZE=2", replies.PARAMETER_SYNTAX),
    ("FROM:<a@b.example> BODY=BINARYMIME", replies.PARAMETER_SYNTAX),
    ("FROM:<a@b.example> XFOO=1", replies.PARAMETER_UNKNOWN),
    ("FROM:<a@b.example> ENVID=bad=", replies.PARAMETER_SYNTAX),
    # Digits are ASCII (ABNF DIGIT): "²" made int() raise (451 and a traceback), "١٢" was read as 12.
    ("FROM:<a@b.example> SIZE=\u00b2", replies.PARAMETER_SYNTAX),
    ("FROM:<a@b.example> SIZE=\u0661\u0662", replies.PARAMETER_SYNTAX),
    # RFC 3461 §4.4: ENVID is printable ASCII once decoded; NUL failed the commit after DATA (451 for
    # ever), CR LF was queued and would have ended the next hop's MAIL line.
    ("FROM:<a@b.example> ENVID=a+00b", replies.PARAMETER_SYNTAX),
    ("FROM:<a@b.example> ENVID=a+0D+0AX-Injected:+20yes", replies.PARAMETER_SYNTAX),
    ("FROM:<a@b.example> ENVID=a+09b", replies.PARAMETER_SYNTAX),
    ("FROM:<a@b.example> ENVID=a+7Fb", replies.PARAMETER_SYNTAX),
    ("FROM:<jö@b.example>", replies.SMTPUTF8_REQUIRED),
    ("FROM:<a@[127.0.0.1]>", replies.MAILBOX_NAME_NOT_ALLOWED),
    ("FROM:<a@127.0.0.1>", replies.MAILBOX_NAME_NOT_ALLOWED),  # no TLD is all-numeric (RFC 3696 §2)
])
def test_mail_refused(arg: str, reply: replies.Reply) -> None:
    with pytest.raises(ParamError) as err:
        parse_mail(arg, esmtp=True, utf8_allowed=True)
    assert (err.value.reply.code, err.value.reply.enhanced) == (reply.code, reply.enhanced)


def test_parameters_need_ehlo() -> None:
    with pytest.raises(ParamError):
        parse_mail("FROM:<a@b.example> SIZE=1", esmtp=False, utf8_allowed=True)


@pytest.mark.parametrize(("arg", "notify", "orcpt"), [
    ("TO:<u@l.example>", None, None),
    ("TO:<u@l.example> NOTIFY=SUCCESS,FAILURE", "SUCCESS,FAILURE", None),
    ("TO:<u@l.example> NOTIFY=NEVER ORCPT=rfc822;u+2Bx@l.example", "NEVER", "rfc822;u+x@l.example"),
])
def test_rcpt_dsn(arg: str, notify: str | None, orcpt: str | None) -> None:
    args = parse_rcpt(arg, esmtp=True, smtputf8=False)
    assert (args.notify, args.orcpt) == (notify, orcpt)


@pytest.mark.parametrize("arg", ["TO:<u@l.example> NOTIFY=NEVER,SUCCESS", "TO:<u@l.example> NOTIFY=",
                                 "TO:<u@l.example> ORCPT=u@l.example", "TO:<u@l.example> SIZE=1"])
def test_rcpt_bad_dsn(arg: str) -> None:
    with pytest.raises(ParamError):
        parse_rcpt(arg, esmtp=True, smtputf8=False)


def test_bare_postmaster() -> None:
    args = parse_rcpt("TO:<Postmaster>", esmtp=False, smtputf8=False)
    assert args.postmaster and args.address is None
