"""Listings over real HTTP: cursor pagination, filters, mailboxes, ownership, and /v1/receive."""

from __future__ import annotations

import asyncio
import base64
import datetime

from tests.api.conftest import ALICE, BOB, Api

PROBLEM = "application/problem+json"


async def _send(api: Api, subject: str, sender_token: str | None = None, sender: str = ALICE,
                to: str = BOB) -> int:
    r = await api.client.post("/v1/send", headers=api.auth(sender_token or api.alice),
                              json={"from": sender, "to": [to], "subject": subject, "text": subject})
    assert r.status_code == 202, r.text
    return r.json()["id"]


async def test_inbox_pages_with_a_cursor_newest_first(api: Api) -> None:
    ids = [await _send(api, f"m{i}") for i in range(5)]
    seen: list[int] = []
    url = "/v1/inbox?limit=2"
    pages = 0
    while url:
        r = await api.client.get(url, headers=api.auth(api.bob))
        assert r.status_code == 200
        page = r.json()
        seen += [m["id"] for m in page["items"]]
        pages += 1
        if page["next_cursor"]:
            assert r.headers["link"].endswith('rel="next"')
            url = f"/v1/inbox?limit=2&cursor={page['next_cursor']}"
        else:
            url = ""
    assert seen == list(reversed(ids)) and pages == 3
    # New mail does not shift a page already handed out.
    first = (await api.client.get("/v1/inbox?limit=2", headers=api.auth(api.bob))).json()
    await _send(api, "late")
    second = (await api.client.get(f"/v1/inbox?limit=2&cursor={first['next_cursor']}",
                                   headers=api.auth(api.bob))).json()
    assert [m["id"] for m in second["items"]] == [ids[2], ids[1]]


async def test_filters_unread_since_and_from(api: Api) -> None:
    first = await _send(api, "from alice")
    carol_id = None
    r = await api.client.post(f"/v1/receive?to={BOB}&from=carol@far.example",
                              headers={**api.auth(api.admin), "Content-Type": "message/rfc822"},
                              content=b"From: Carol <carol@far.example>\r\nTo: bob@example.test\r\n"
                                      b"Subject: from carol\r\n\r\nhello\r\n")
    assert r.status_code == 202, r.text
    carol_id = r.json()["id"]
    await api.pool.execute("UPDATE mailbox_messages SET flags = $2::text[] WHERE message_id = $1", first,
                           ["\\Seen"])
    unread = (await api.client.get("/v1/inbox?unread=true", headers=api.auth(api.bob))).json()
    assert [m["id"] for m in unread["items"]] == [carol_id]
    assert [m["unread"] for m in (await api.client.get("/v1/inbox", headers=api.auth(api.bob))).json()["items"]] \
        == [True, False]
    by_from = (await api.client.get("/v1/inbox", params={"from": "CAROL@far"}, headers=api.auth(api.bob))).json()
    assert [m["id"] for m in by_from["items"]] == [carol_id]
    assert (await api.client.get("/v1/inbox", params={"from": "%"}, headers=api.auth(api.bob))).json()["items"] == []
    await api.pool.execute("UPDATE mailbox_messages SET internal_date = now() - interval '3 days'"
                           " WHERE message_id = $1", first)
    since = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)).isoformat()
    recent = (await api.client.get("/v1/inbox", params={"since": since}, headers=api.auth(api.bob))).json()
    assert [m["id"] for m in recent["items"]] == [carol_id]
    bad = await api.client.get("/v1/inbox", params={"since": "yesterday"}, headers=api.auth(api.bob))
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM


async def test_named_mailboxes_and_errors(api: Api) -> None:
    await _send(api, "x")
    r = await api.client.get("/v1/mailboxes/inbox/messages", headers=api.auth(api.bob))
    assert r.status_code == 200 and len(r.json()["items"]) == 1 and r.json()["items"][0]["mailbox"] == "INBOX"
    assert (await api.client.get("/v1/mailboxes/Archive/messages", headers=api.auth(api.bob))).json()["items"] == []
    r = await api.client.get("/v1/mailboxes/Nope/messages", headers=api.auth(api.bob))
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    r = await api.client.get("/v1/inbox?cursor=garbage", headers=api.auth(api.bob))
    assert r.status_code == 422
    sent_cursor = "c2VudDoxMA"  # "sent:10": a cursor of another listing
    assert (await api.client.get(f"/v1/inbox?cursor={sent_cursor}", headers=api.auth(api.bob))).status_code == 422
    assert (await api.client.get("/v1/inbox?limit=0", headers=api.auth(api.bob))).status_code == 422
    assert (await api.client.get("/v1/inbox?limit=501", headers=api.auth(api.bob))).status_code == 422


async def test_other_accounts_messages_are_404(api: Api) -> None:
    mid = await _send(api, "private", sender_token=api.bob, sender=BOB, to=BOB)
    for path in (f"/v1/messages/{mid}", f"/v1/messages/{mid}/raw", f"/v1/messages/{mid}/attachments/1",
                 f"/v1/messages/{mid}/status", "/v1/messages/999999", "/v1/messages/999999/status"):
        r = await api.client.get(path, headers=api.auth(api.alice))
        assert r.status_code == 404, path
        assert r.headers["content-type"] == PROBLEM
    assert (await api.client.get(f"/v1/messages/{mid}", headers=api.auth(api.bob))).status_code == 200
    assert (await api.client.get("/v1/messages/abc", headers=api.auth(api.bob))).status_code == 422


async def test_sent_pages(api: Api) -> None:
    ids = await asyncio.gather(*[_send(api, f"s{i}") for i in range(3)])
    page = (await api.client.get("/v1/sent?limit=2", headers=api.auth(api.alice))).json()
    assert [m["id"] for m in page["items"]] == sorted(ids, reverse=True)[:2]
    rest = (await api.client.get(f"/v1/sent?limit=2&cursor={page['next_cursor']}",
                                 headers=api.auth(api.alice))).json()
    assert [m["id"] for m in rest["items"]] == [min(ids)] and rest["next_cursor"] is None


async def test_receive_delivers_locally_with_the_same_checks(api: Api) -> None:
    msg = b"From: x@far.example\r\nTo: bob@example.test\r\nSubject: in\r\n\r\nhello\r\n"
    headers = {**api.auth(api.admin), "Content-Type": "message/rfc822"}
    r = await api.client.post(f"/v1/receive?to={BOB}&to={ALICE}&from=x@far.example", headers=headers,
                              content=msg)
    assert r.status_code == 202, r.text
    mid = r.json()["id"]
    for token in (api.alice, api.bob):
        assert [m["id"] for m in (await api.client.get("/v1/inbox", headers=api.auth(token))).json()["items"]] \
            == [mid]
    raw = (await api.client.get(f"/v1/messages/{mid}/raw", headers=api.auth(api.bob))).content
    assert raw.startswith(b"Return-Path: <x@far.example>\r\nDelivered-To: bob@example.test\r\n")
    # Not a relay; unknown local users refused; nothing stored for either.
    r = await api.client.post("/v1/receive?to=someone@far.example", headers=headers, content=msg)
    assert r.status_code == 422 and r.json()["type"].endswith("/not-local")
    r = await api.client.post("/v1/receive?to=ghost@example.test", headers=headers, content=msg)
    assert r.status_code == 422 and r.json()["recipients"] == ["ghost@example.test"]
    r = await api.client.post("/v1/receive", headers=headers, content=msg)
    assert r.status_code == 422  # envelope recipients are required
    r = await api.client.post(f"/v1/receive?to={BOB}", headers={**api.auth(api.admin),
                                                                 "Content-Type": "text/plain"}, content=msg)
    assert r.status_code == 415
    assert await api.pool.fetchval("SELECT count(*) FROM messages") == 1


async def test_ids_cursors_and_filters_postgres_cannot_take_are_4xx(api: Api) -> None:
    """Numbers past a bigint and NUL in text reached the queries and were 500s."""
    def cursor(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    await _send(api, "one")
    cases = [(f"/v1/messages/{n}{suffix}", 404) for n in (2**63, 10**20)
             for suffix in ("", "/raw", "/status", "/attachments/1")]
    cases += [
        (f"/v1/inbox?cursor={cursor('mbox:INBOX:' + str(2**63))}", 422),
        (f"/v1/sent?cursor={cursor('sent:' + str(10**20))}", 422),
        (f"/v1/inbox?cursor={cursor('mbox:INBOX:١٢')}", 422),  # digits, but not ASCII ones
        ("/v1/inbox?from=%00", 422),
        ("/v1/sent?from=a%00b", 422),
        ("/v1/mailboxes/%00/messages", 404),
    ]
    for url, status in cases:
        r = await api.client.get(url, headers=api.auth(api.bob))
        assert r.status_code == status, (url, r.status_code, r.text)
        assert r.headers["content-type"] == PROBLEM, url


async def test_messages_the_email_package_cannot_fully_parse_are_still_shown(api: Api) -> None:
    """A header its parser raises on, and a body nested past Python's recursion limit, were 500s."""
    from tests.api.test_send import _nested_multipart

    odd_id = b"From: x@far.example\r\nSubject: odd\r\nMessage-ID: <<<\xff>>>\r\n\r\nhello\r\n"
    cases = [(odd_id, "odd", "hello"), (_nested_multipart(2000), "deep", None)]
    for raw, subject, text in cases:
        r = await api.client.post(f"/v1/receive?to={BOB}", content=raw, headers={
            **api.auth(api.admin), "Content-Type": "message/rfc822"})
        assert r.status_code == 202, r.text
        r = await api.client.get(f"/v1/messages/{r.json()['id']}", headers=api.auth(api.bob))
        assert r.status_code == 200, (subject, r.text)
        view = r.json()
        assert view["subject"] == subject and (view["text"] and view["text"].strip()) == text
        assert any(h["name"] == "Subject" for h in view["headers"])
    r = await api.client.get("/v1/inbox", headers=api.auth(api.bob))
    assert [m["subject"] for m in r.json()["items"]] == ["deep", "odd"]
