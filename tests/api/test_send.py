"""POST /v1/send over real HTTP: to a local user and read back, to a remote address and its status,
raw messages, idempotency, and every refusal."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy

from storage import accounts
from tests.api.conftest import ALICE, BOB, HASH, Api, ApiFactory

PROBLEM = "application/problem+json"


def _msg(**kw: object) -> dict[str, object]:
    body: dict[str, object] = {"from": f"Alice <{ALICE}>", "to": [BOB], "subject": "Hello", "text": "Hi Bob"}
    body.update(kw)
    return body


async def test_send_to_local_user_then_read_it_in_the_inbox(api: Api) -> None:
    pdf = b"%PDF-1.4 fake"
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(
        html="<p>Hi <b>Bob</b></p>", subject="Grüße",
        attachments=[{"filename": "report.pdf", "content_type": "application/pdf",
                      "content": base64.b64encode(pdf).decode()}],
        headers={"Reply-To": "alice+replies@example.test", "X-Campaign": "42"}))
    assert r.status_code == 202, r.text
    sent = r.json()
    assert sent["recipients"] == [{"address": BOB, "status": "delivered"}]
    assert sent["message_id"].endswith("@mail.example.test>")
    assert r.headers["location"] == sent["status_url"] == f"/v1/messages/{sent['id']}/status"

    inbox = (await api.client.get("/v1/inbox", headers=api.auth(api.bob))).json()
    assert [m["id"] for m in inbox["items"]] == [sent["id"]]
    item = inbox["items"][0]
    assert item["subject"] == "Grüße" and item["unread"] is True
    assert ALICE in item["from"]

    msg = (await api.client.get(f"/v1/messages/{sent['id']}", headers=api.auth(api.bob))).json()
    assert msg["text"].strip() == "Hi Bob"
    assert msg["html"].strip() == "<p>Hi <b>Bob</b></p>"
    assert msg["subject"] == "Grüße"
    names = {h["name"].lower(): h["value"] for h in msg["headers"]}
    assert names["reply-to"] == "alice+replies@example.test" and names["x-campaign"] == "42"
    assert names["delivered-to"] == BOB  # this account's copy, with its trace fields
    assert msg["attachments"] == [{"index": 1, "filename": "report.pdf", "content_type": "application/pdf",
                                   "size": len(pdf), "url": f"/v1/messages/{sent['id']}/attachments/1"}]
    att = await api.client.get(msg["attachments"][0]["url"], headers=api.auth(api.bob))
    assert att.status_code == 200 and att.content == pdf
    assert att.headers["content-type"] == "application/pdf"
    assert 'filename="report.pdf"' in att.headers["content-disposition"]
    assert (await api.client.get(f"/v1/messages/{sent['id']}/attachments/2",
                                 headers=api.auth(api.bob))).status_code == 404

    raw = await api.client.get(f"/v1/messages/{sent['id']}/raw", headers=api.auth(api.bob))
    assert raw.headers["content-type"] == "message/rfc822"
    parsed = email.message_from_bytes(raw.content, policy=email.policy.default)
    assert parsed["Return-Path"] == f"<{ALICE}>" and parsed["Received"].startswith("from http-api ([127.0.0.1])")

    status = (await api.client.get(sent["status_url"], headers=api.auth(api.alice))).json()
    assert status["recipients"][0]["recipient"] == BOB and status["recipients"][0]["status"] == "delivered"
    # Alice sent it (she may read it and its status); Bob received it (he may not see its status).
    assert (await api.client.get(f"/v1/messages/{sent['id']}", headers=api.auth(api.alice))).status_code == 200
    assert (await api.client.get(sent["status_url"], headers=api.auth(api.bob))).status_code == 404

    sent_list = (await api.client.get("/v1/sent", headers=api.auth(api.alice))).json()
    assert [m["id"] for m in sent_list["items"]] == [sent["id"]]
    assert (await api.client.get("/v1/sent", headers=api.auth(api.bob))).json()["items"] == []


async def test_send_to_remote_address_is_queued(api: Api) -> None:
    r = await api.client.post("/v1/send", headers=api.auth(api.alice),
                              json=_msg(to=["Carol <carol@far.example>"], cc=[BOB], bcc=["dave@far.example"]))
    assert r.status_code == 202, r.text
    sent = r.json()
    assert {(x["address"], x["status"]) for x in sent["recipients"]} == {
        (BOB, "delivered"), ("carol@far.example", "queued"), ("dave@far.example", "queued")}
    status = (await api.client.get(sent["status_url"], headers=api.auth(api.alice))).json()
    by_rcpt = {s["recipient"]: s for s in status["recipients"]}
    assert by_rcpt["carol@far.example"]["status"] == "queued" and not by_rcpt["carol@far.example"]["local"]
    assert by_rcpt[BOB]["status"] == "delivered"
    raw = await api.pool.fetchval("SELECT m.raw FROM queue q JOIN messages m ON m.id = q.message_id")
    assert b"dave@far.example" not in raw  # Bcc is envelope only

    # The queue works (outbound's worker is not in this branch: move the rows as it would).
    await api.pool.execute("UPDATE queue_recipients SET status='deferred', attempts=1,"
                           " last_error='451 4.7.1 greylisted' WHERE recipient='carol@far.example'")
    await api.pool.execute("UPDATE queue_recipients SET status='bounced', attempts=1,"
                           " last_error='550 5.1.1 no such user' WHERE recipient='dave@far.example'")
    status = (await api.client.get(sent["status_url"], headers=api.auth(api.alice))).json()
    by_rcpt = {s["recipient"]: s for s in status["recipients"]}
    assert by_rcpt["carol@far.example"]["status"] == "deferred"
    assert by_rcpt["carol@far.example"]["last_error"] == "451 4.7.1 greylisted"
    assert by_rcpt["dave@far.example"]["status"] == "bounced"
    await api.pool.execute("UPDATE queue_recipients SET status='delivered', last_error=NULL"
                           " WHERE recipient='carol@far.example'")
    status = (await api.client.get(sent["status_url"], headers=api.auth(api.alice))).json()
    assert {s["recipient"]: s["status"] for s in status["recipients"]}["carol@far.example"] == "delivered"


async def test_send_raw_message(api: Api) -> None:
    raw = (f"From: Alice <{ALICE}>\r\nTo: {BOB}\r\nBcc: hidden@far.example\r\nSubject: raw one\r\n"
           "Message-ID: <fixed@example.test>\r\n\r\nraw body\r\n").encode()
    r = await api.client.post("/v1/send", headers={**api.auth(api.alice), "Content-Type": "message/rfc822"},
                              content=raw)
    assert r.status_code == 202, r.text
    assert r.json()["message_id"] == "<fixed@example.test>"
    assert {x["address"] for x in r.json()["recipients"]} == {BOB, "hidden@far.example"}
    stored = await api.pool.fetchval("SELECT raw FROM messages WHERE id = $1", r.json()["id"])
    assert b"Bcc:" not in stored and b"hidden@far.example" not in stored and b"raw body" in stored
    assert b"\r\nDate: " in stored or stored.startswith(b"Date: ") or b"\nDate:" in stored


async def test_idempotency_key_returns_the_same_result_and_never_sends_twice(api: Api) -> None:
    headers = {**api.auth(api.alice), "Idempotency-Key": "order-1234"}
    first = await api.client.post("/v1/send", headers=headers, json=_msg())
    again = await api.client.post("/v1/send", headers=headers, json=_msg())
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 1
    # The same key with another request is a client error, and sends nothing.
    other = await api.client.post("/v1/send", headers=headers, json=_msg(subject="different"))
    assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
    assert other.json()["type"].endswith("/key-reused")
    # Keys are per account: Bob's "order-1234" is his own.
    bob = await api.client.post("/v1/send", headers={**api.auth(api.bob), "Idempotency-Key": "order-1234"},
                                json=_msg(**{"from": BOB, "to": [ALICE]}))
    assert bob.status_code == 202 and bob.json()["id"] != first.json()["id"]
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 2


async def test_concurrent_requests_with_one_key_send_once(api: Api) -> None:
    headers = {**api.auth(api.alice), "Idempotency-Key": "burst"}
    results = await asyncio.gather(*[api.client.post("/v1/send", headers=headers, json=_msg())
                                     for _ in range(8)])
    codes = sorted(r.status_code for r in results)
    assert set(codes) <= {202, 409} and 202 in codes
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 1
    ids = {r.json()["id"] for r in results if r.status_code == 202}
    assert len(ids) == 1


async def test_a_refused_send_releases_its_idempotency_key(api: Api) -> None:
    headers = {**api.auth(api.alice), "Idempotency-Key": "retry-me"}
    bad = await api.client.post("/v1/send", headers=headers, json=_msg(to=["nobody@example.test"]))
    assert bad.status_code == 422
    # Fixed by the operator (the account now exists): the same key and request may be retried.
    await accounts.add_account(api.pool, "nobody@example.test", HASH)
    good = await api.client.post("/v1/send", headers=headers, json=_msg(to=["nobody@example.test"]))
    assert good.status_code == 202, good.text


async def test_sender_must_be_owned(api: Api) -> None:
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(**{"from": BOB}))
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/sender-not-owned")
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(**{"from": "ceo@far.example"}))
    assert r.status_code == 403
    # Plus-addressing and an alias that reaches Alice are hers.
    await accounts.add_alias(api.pool, "sales@example.test", [ALICE])
    for sender in ("alice+news@example.test", "sales@example.test"):
        r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(**{"from": sender}))
        assert r.status_code == 202, (sender, r.text)
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 2


async def test_invalid_requests_are_422_problems(api: Api) -> None:
    cases = [
        ({"to": [BOB], "text": "x"}, "from missing"),
        (_msg(to=[], cc=[], bcc=[]), "no recipients"),
        (_msg(to=["not an address"]), "bad recipient"),
        (_msg(text=None), "no body"),
        (_msg(headers={"Bcc": "x@y.example"}), "reserved header"),
        (_msg(headers={"X-Evil": "a\r\nBcc: x@y.example"}), "header injection"),
        (_msg(subject="a\r\nBcc: x@y.example"), "subject injection"),
        (_msg(attachments=[{"filename": "a", "content": "!!!not base64"}]), "bad base64"),
        (_msg(unknown_field=1), "unknown field"),
    ]
    for body, why in cases:
        r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=body)
        assert r.status_code == 422, (why, r.status_code, r.text)
        assert r.headers["content-type"] == PROBLEM, why
        assert r.json()["status"] == 422
    r = await api.client.post("/v1/send", headers={**api.auth(api.alice), "Content-Type": "application/json"},
                              content=b"{not json")
    assert r.status_code == 422
    r = await api.client.post("/v1/send", headers={**api.auth(api.alice), "Content-Type": "text/plain"},
                              content=b"hello")
    assert r.status_code == 415
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(to=["ghost@example.test"]))
    assert r.status_code == 422 and r.json()["recipients"] == ["ghost@example.test"]
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_too_large_is_413(api_factory: ApiFactory) -> None:
    api = await api_factory(http={"max_request_size": 4096}, max_message_size=2048)
    big = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(text="x" * 5000))
    assert big.status_code == 413 and big.headers["content-type"] == PROBLEM
    # Under the request cap, over the message size (base64 attachment grows it).
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(
        attachments=[{"filename": "a.bin", "content": base64.b64encode(b"\0" * 2000).decode()}]))
    assert r.status_code == 413 and r.json()["type"].endswith("/too-large")

    async def chunks():  # no Content-Length: the cap still holds
        for _ in range(10):
            yield b"x" * 1000

    r = await api.client.post("/v1/send", headers={**api.auth(api.alice), "Content-Type": "message/rfc822"},
                              content=chunks())
    assert r.status_code == 413
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_messages_per_hour_is_429_with_retry_after(api_factory: ApiFactory) -> None:
    api = await api_factory(limits={"messages_per_hour": 2})
    codes = [(await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg())).status_code
             for _ in range(2)]
    assert codes == [202, 202]
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg())
    assert r.status_code == 429 and r.headers["content-type"] == PROBLEM
    assert 1 <= int(r.headers["retry-after"]) <= 1800
    # Bob has his own budget.
    assert (await api.client.post("/v1/send", headers=api.auth(api.bob),
                                  json=_msg(**{"from": BOB, "to": [ALICE]}))).status_code == 202


# Every character str.splitlines breaks at, which the email package refuses in a header value (a 500
# before), and NUL. One API (one database) for the whole table: a database per case costs seconds.
LINE_BREAKS = ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\0"]


async def test_line_breaks_of_every_kind_in_one_line_fields_are_422(api: Api) -> None:
    for brk in LINE_BREAKS:
        cases = [
            (_msg(subject=f"a{brk}Bcc: x@y.example"), "subject"),
            (_msg(headers={"X-Note": f"a{brk}Bcc: x@y.example"}), "header value"),
            (_msg(**{"from": f"Al{brk}ice <{ALICE}>"}), "from display name"),
            (_msg(to=[f"Bo{brk}b <{BOB}>"]), "to display name"),
            (_msg(attachments=[{"filename": f"a{brk}b.txt", "content": "aGk="}]), "attachment filename"),
        ]
        for body, why in cases:
            r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=body)
            assert r.status_code == 422, (why, repr(brk), r.status_code, r.text)
            assert r.headers["content-type"] == PROBLEM
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_messages_with_nul_or_crlf_in_an_address_are_422(api: Api) -> None:
    raw_headers = {**api.auth(api.alice), "Content-Type": "message/rfc822"}
    cases = [
        ({"json": _msg(text="a\0b")}, "NUL in the text"),
        ({"json": _msg(text=None, html="<p>a\0b</p>")}, "NUL in the html"),
        ({"content": f"From: {ALICE}\r\nTo: {BOB}\r\n\r\nh\0i\r\n".encode(), "headers": raw_headers}, "raw NUL"),
        ({"content": f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: a\0b\r\n\r\nhi\r\n".encode(),
          "headers": raw_headers}, "raw NUL in a header"),
        ({"content": f"From: {ALICE}\r\nTo: =?utf-8?q?x=0D=0ABcc=3A_y?= <{BOB}>\r\n\r\nhi\r\n".encode(),
          "headers": raw_headers}, "raw encoded word decoding to CR LF"),
        ({"content": f"From: {ALICE}\r\nTo: {BOB}\r\n\r\n{'x' * 999}\r\n".encode(), "headers": raw_headers},
         "raw line over 998 octets, as SMTP refuses it"),
    ]
    for kw, why in cases:
        r = await api.client.post("/v1/send", **{"headers": api.auth(api.alice), **kw})
        assert r.status_code == 422, (why, r.status_code, r.text)
        assert r.json()["type"].endswith("/invalid-message"), why
    for content in (b"From: x@far.example\r\n\r\nh\0i\r\n", b"From: x@far.example\n\n" + b"y" * 999 + b"\n"):
        r = await api.client.post(f"/v1/receive?to={BOB}", headers={**api.auth(api.admin), "Content-Type":
                                  "message/rfc822"}, content=content)
        assert r.status_code == 422 and r.json()["type"].endswith("/invalid-message")
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_raw_messages_in_valid_but_unusual_forms_are_accepted(api: Api) -> None:
    raw_headers = {**api.auth(api.alice), "Content-Type": "message/rfc822"}
    cases = [
        (f"From: {ALICE}\nTo: {BOB}\nSubject: lf\n\nline one\nline two\n", "LF line endings"),
        (f"From: Alice\r\n <{ALICE}>\r\nTo: {BOB}\r\nSubject: folded\r\n\r\nhi\r\n", "folded From"),
        (f"From: {ALICE}\r\nTo: undisclosed-recipients:;\r\nBcc: {BOB}\r\nSubject: group\r\n\r\nhi\r\n",
         "empty group in To"),
    ]
    for text, why in cases:
        r = await api.client.post("/v1/send", headers=raw_headers, content=text.encode())
        assert r.status_code == 202, (why, r.status_code, r.text)
        assert [x["address"] for x in r.json()["recipients"]] == [BOB], why
        stored = await api.pool.fetchval("SELECT raw FROM messages WHERE id = $1", r.json()["id"])
        # Every line ends CRLF, so the header block ends where IMAP and the parsers expect it.
        assert stored.count(b"\n") == stored.count(b"\r\n") == stored.count(b"\r"), why
    r = await api.client.post(f"/v1/receive?to={BOB}", headers={**api.auth(api.admin), "Content-Type":
                              "message/rfc822"}, content=b"From: x@far.example\nSubject: in\n\nhi\n")
    assert r.status_code == 202, r.text
    stored = await api.pool.fetchval("SELECT raw FROM messages WHERE id = $1", r.json()["id"])
    assert stored.count(b"\n") == stored.count(b"\r\n") == stored.count(b"\r")


async def test_more_recipients_than_smtp_max_recipients_is_422(api_factory: ApiFactory) -> None:
    api = await api_factory(max_recipients=3)
    four = [f"r{i}@far.example" for i in range(4)]
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(to=four[:2], bcc=four[2:]))
    assert r.status_code == 422 and r.json()["type"].endswith("/too-many-recipients"), r.text
    raw = f"From: {ALICE}\r\nTo: {', '.join(four)}\r\n\r\nhi\r\n".encode()
    r = await api.client.post("/v1/send", headers={**api.auth(api.alice), "Content-Type": "message/rfc822"},
                              content=raw)
    assert r.status_code == 422 and r.json()["type"].endswith("/too-many-recipients"), r.text
    query = "&".join(f"to=u{i}%40example.test" for i in range(4))
    r = await api.client.post(f"/v1/receive?{query}", headers={**api.auth(api.admin), "Content-Type":
                              "message/rfc822"}, content=b"From: x@far.example\r\n\r\nhi\r\n")
    assert r.status_code == 422 and r.json()["type"].endswith("/too-many-recipients"), r.text
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 0
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(to=four[:3]))
    assert r.status_code == 202, r.text


def _nested_multipart(depth: int) -> bytes:
    """A message whose body is `depth` multiparts, one inside the other, around one text part."""
    body = b"Content-Type: text/plain\r\n\r\nleaf"
    for i in range(depth):
        boundary = b"b%d" % i
        body = (b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n--" + boundary + b"\r\n"
                + body + b"\r\n--" + boundary + b"--")
    return f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: deep\r\n".encode() + body + b"\r\n"


async def test_raw_message_nested_deeper_than_pythons_recursion_is_sent(api: Api) -> None:
    """Only the header block is parsed for the envelope: the body's depth used to be a RecursionError."""
    r = await api.client.post("/v1/send", headers={**api.auth(api.alice), "Content-Type": "message/rfc822"},
                              content=_nested_multipart(2000))
    assert r.status_code == 202, r.text
    assert [x["address"] for x in r.json()["recipients"]] == [BOB]


async def test_idn_addresses_are_written_as_a_labels_not_encoded_words(api: Api) -> None:
    """RFC 2047 §5: no encoded word in an addr-spec; the email package put one in for an IDN domain."""
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(
        to=["Cärol <carol@fär.example>"], cc=[BOB]))
    assert r.status_code == 202, r.text
    stored = await api.pool.fetchval("SELECT raw FROM messages WHERE id = $1", r.json()["id"])
    msg = email.message_from_bytes(stored, policy=email.policy.default)
    assert str(msg["To"]) == "Cärol <carol@xn--fr-via.example>"
    header_block = stored.split(b"\r\n\r\n", 1)[0]
    assert b"carol@xn--fr-via.example" in header_block and b"@=?" not in header_block
    # A UTF-8 local part (SMTPUTF8) is still an address: here an unknown local one, never a 500.
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(to=["bö@example.test"]))
    assert r.status_code == 422 and r.json()["recipients"] == ["bö@example.test"], r.text


async def test_utf8_local_parts_are_written_in_utf8_not_encoded_words(api: Api) -> None:
    """A UTF-8 local part makes an internationalised message (RFC 6532 §3.2): the address is written
    in UTF-8 as it is, since an encoded word is not allowed in an addr-spec (RFC 2047 §5) and turned
    `jösé@...` into the address `=?utf-8?q?j=C3=B6s=C3=A9?=@...`. Messages of ASCII addresses keep
    RFC 2047 for everything else, so that a server without SMTPUTF8 can take them."""
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(
        to=["Jösé <jösé@fär.example>"], cc=[BOB], subject="Grüße"))
    assert r.status_code == 202, r.text
    stored = await api.pool.fetchval("SELECT raw FROM messages WHERE id = $1", r.json()["id"])
    header_block = stored.split(b"\r\n\r\n", 1)[0]
    assert "To: Jösé <jösé@xn--fr-via.example>".encode() in header_block, header_block
    assert b"=?" not in header_block.split(b"\r\nSubject:", 1)[0].split(b"\r\nTo:", 1)[1]
    msg = email.message_from_string(stored.decode("utf-8"), policy=email.policy.SMTPUTF8)
    assert msg["To"].addresses[0].username == "jösé" and str(msg["Subject"]) == "Grüße"
    assert sorted(x["address"] for x in r.json()["recipients"]) == [BOB, "jösé@xn--fr-via.example"]
    r = await api.client.post("/v1/send", headers=api.auth(api.alice), json=_msg(
        to=["Cärol <carol@fär.example>"], subject="Grüße"))
    stored = await api.pool.fetchval("SELECT raw FROM messages WHERE id = $1", r.json()["id"])
    assert stored.isascii() and b"Subject: =?utf-8?" in stored, stored


def _raw_to(*rcpts: str) -> bytes:
    return (f"From: Alice <{ALICE}>\r\nTo: {', '.join(rcpts)}\r\nSubject: quota\r\nMessage-ID: <q@example.test>\r\n"
            "Date: Tue, 02 Jan 2024 03:04:05 +0000\r\n\r\n" + "x" * 300 + "\r\n").encode()


async def test_send_to_a_user_the_message_would_put_over_quota_is_mailbox_full(api: Api) -> None:
    """The RCPT-time check sees the request's size, which fits; the message stored (with our Received)
    does not: refused when it is committed, nothing stored."""
    raw = _raw_to(BOB)
    await api.pool.execute("UPDATE accounts SET quota_bytes = $2 WHERE address = $1", BOB, len(raw) + 10)
    r = await api.client.post("/v1/send", headers={**api.auth(api.alice), "Content-Type": "message/rfc822"},
                              content=raw)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/mailbox-full")
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 0
    assert await api.pool.fetchval("SELECT used_bytes FROM accounts WHERE address = $1", BOB) == 0


async def test_send_to_a_full_and_a_roomy_user_bounces_the_full_one(api: Api) -> None:
    raw = _raw_to(BOB, ALICE)
    await api.pool.execute("UPDATE accounts SET quota_bytes = $2 WHERE address = $1", BOB, len(raw) + 10)
    r = await api.client.post("/v1/send", headers={**api.auth(api.alice), "Content-Type": "message/rfc822"},
                              content=raw)
    assert r.status_code == 202, r.text
    assert sorted((x["address"], x["status"]) for x in r.json()["recipients"]) == [
        (ALICE, "delivered"), (BOB, "bounced")]
    assert (await api.client.get("/v1/inbox", headers=api.auth(api.bob))).json()["items"] == []
    # Alice has her copy, and the DSN telling her Bob's mailbox was full.
    subjects = sorted(m["subject"] for m in (await api.client.get("/v1/inbox", headers=api.auth(api.alice))).json()["items"])
    assert subjects == ["Undelivered Mail Returned to Sender", "quota"]
