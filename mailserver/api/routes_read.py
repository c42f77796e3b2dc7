"""Reading mail over HTTP: listings (inbox, a mailbox, sent), one message, its raw bytes, an attachment,
and the per-recipient delivery status of a sent message.

Every route needs the `read` scope; ownership is enforced by `storage.apiviews`, and anything the caller
may not see is the same 404 as anything that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mailserver.api import pagination
from mailserver.api.auth import Caller, Principal, require
from mailserver.api.compose import attachment_bytes, message_json, parse
from mailserver.api.context import ApiContext
from mailserver.api.problems import Problem
from storage import apiviews
from storage.apiviews import Filters, Summary

router = APIRouter(prefix="/v1", tags=["read"])


class MessageSummary(BaseModel):
    """One message in a listing."""

    id: int
    uid: int | None
    mailbox: str | None
    date: datetime
    size: int
    subject: str | None
    from_: str | None = Field(None, alias="from")
    to: str | None
    unread: bool | None
    flags: list[str]
    has_attachments: bool
    url: str


class Page(BaseModel):
    """A page of a listing; pass `next_cursor` as `cursor` for the next one (null: no more)."""

    items: list[MessageSummary]
    next_cursor: str | None


def _filters(unread: bool, since: datetime | None, sender: str | None) -> Filters:
    # PostgreSQL text cannot hold NUL: sent on to the query it was a 500.
    if sender and "\0" in sender:
        raise Problem(422, "'from' must not contain NUL", kind="invalid-request")
    return Filters(unread=unread, since=since, sender=sender or None)


def _summary(s: Summary, mailbox_listing: bool) -> dict[str, Any]:
    return {"id": s.id, "uid": s.uid, "mailbox": s.mailbox, "date": s.date.isoformat(), "size": s.size,
            "subject": s.subject, "from": s.from_addr, "to": s.to_addrs,
            "unread": ("\\Seen" not in s.flags) if mailbox_listing else None, "flags": list(s.flags),
            "has_attachments": s.has_attachments, "url": f"/v1/messages/{s.id}"}


def _page(request: Request, items: list[dict[str, Any]], next_cursor: str | None) -> JSONResponse:
    headers = {}
    if next_cursor:
        url = request.url.include_query_params(cursor=next_cursor)
        headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
    return JSONResponse({"items": items, "next_cursor": next_cursor}, headers=headers)


async def _mailbox_page(request: Request, principal: Principal, name: str, limit: int, cursor: str | None,
                        filters: Filters) -> JSONResponse:
    require(principal, "read")
    ctx: ApiContext = request.app.state.ctx
    if "\0" in name:  # no mailbox name holds NUL (and PostgreSQL text cannot): as any unknown name
        raise Problem(404, "no such mailbox")
    scope = f"mbox:{name.upper() if name.upper() == 'INBOX' else name}"
    before = pagination.decode(scope, cursor)
    rows = await apiviews.list_mailbox(ctx.pool, principal.account.id, name, limit=limit + 1,
                                       before_uid=before, filters=filters)
    if rows is None:
        raise Problem(404, f"no mailbox named {name!r}")
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = pagination.encode(scope, rows[-1].uid or 0) if more and rows else None
    return _page(request, [_summary(r, True) for r in rows], next_cursor)


_LIMIT = Query(pagination.DEFAULT_LIMIT, ge=1, le=pagination.MAX_LIMIT)
_UNREAD = Query(False, description="Only messages without \\Seen.")
_SINCE = Query(None, description="Only messages received at or after this time (ISO 8601).")
_FROM = Query(None, alias="from", max_length=200, description="Only messages whose From contains this.")


@router.get("/inbox", response_model=Page)
async def inbox(request: Request, principal: Caller, limit: int = _LIMIT,
                cursor: str | None = None, unread: bool = _UNREAD, since: datetime | None = _SINCE,
                sender: str | None = _FROM) -> JSONResponse:
    """The INBOX, newest first."""
    return await _mailbox_page(request, principal, "INBOX", limit, cursor, _filters(unread, since, sender))


@router.get("/mailboxes/{name:path}/messages", response_model=Page)
async def mailbox(name: str, request: Request, principal: Caller,
                  limit: int = _LIMIT, cursor: str | None = None, unread: bool = _UNREAD,
                  since: datetime | None = _SINCE, sender: str | None = _FROM) -> JSONResponse:
    """A mailbox by its full name (`Archive/2024`), newest first."""
    return await _mailbox_page(request, principal, name, limit, cursor, _filters(unread, since, sender))


@router.get("/sent", response_model=Page)
async def sent(request: Request, principal: Caller, limit: int = _LIMIT,
               cursor: str | None = None, since: datetime | None = _SINCE,
               sender: str | None = _FROM) -> JSONResponse:
    """Messages this account sent, newest first (`unread` does not apply)."""
    require(principal, "read")
    ctx: ApiContext = request.app.state.ctx
    before = pagination.decode("sent", cursor)
    rows = await apiviews.list_sent(ctx.pool, principal.account.id, limit=limit + 1, before_id=before,
                                    filters=_filters(False, since, sender))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = pagination.encode("sent", rows[-1].id) if more and rows else None
    return _page(request, [_summary(r, False) for r in rows], next_cursor)


def _no_such_id(message_id: int) -> bool:
    """True for an id no message can have: ids are positive bigints, and a larger number than a bigint
    failed in the query (a 500) rather than being the 404 of any other missing message."""
    return not 1 <= message_id <= pagination.MAX_KEY


async def _message(request: Request, principal: Principal, message_id: int) -> apiviews.StoredRaw:
    require(principal, "read")
    ctx: ApiContext = request.app.state.ctx
    if _no_such_id(message_id):
        raise Problem(404, "no such message")
    found = await apiviews.get_message(ctx.pool, principal.account.id, message_id)
    if found is None:
        raise Problem(404, "no such message")
    return found


@router.get("/messages/{message_id}")
async def message(message_id: int, request: Request, principal: Caller) -> JSONResponse:
    """One message: headers, text and html bodies, attachment list, where it is."""
    found = await _message(request, principal, message_id)
    extra = {"received_at": found.received_at.isoformat(), "sent": found.sent,
             "mailboxes": [{"mailbox": m, "uid": u, "flags": list(f)} for m, u, f in found.mailboxes],
             "status_url": f"/v1/messages/{message_id}/status" if found.sent else None}
    return JSONResponse(message_json(message_id, found.raw, extra))


@router.get("/messages/{message_id}/raw", response_class=Response,
            responses={200: {"content": {"message/rfc822": {}}}})
async def raw(message_id: int, request: Request, principal: Caller) -> Response:
    """The message exactly as stored (with this account's Return-Path and Delivered-To)."""
    found = await _message(request, principal, message_id)
    return Response(found.raw, media_type="message/rfc822")


@router.get("/messages/{message_id}/attachments/{index}", response_class=Response)
async def attachment(message_id: int, index: int, request: Request,
                     principal: Caller) -> Response:
    """Download attachment `index` (1-based, as listed by the message)."""
    found = await _message(request, principal, message_id)
    _, _, _, parts = parse(found.raw)
    if not 1 <= index <= len(parts):
        raise Problem(404, "no such attachment")
    part = parts[index - 1]
    name = part.get_filename() or f"attachment-{index}"
    # RFC 6266 §4.3: an ASCII fallback plus the exact name in filename* (RFC 8187).
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
    return Response(attachment_bytes(part), media_type=part.get_content_type(),
                    headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"})


class RecipientStatus(BaseModel):
    """One recipient of a sent message."""

    recipient: str
    status: str
    local: bool
    attempts: int
    last_error: str | None
    updated_at: datetime | None


class Status(BaseModel):
    """Delivery status of a sent message, per recipient."""

    id: int
    recipients: list[RecipientStatus]


@router.get("/messages/{message_id}/status", response_model=Status)
async def status(message_id: int, request: Request, principal: Caller) -> Status:
    """Per-recipient delivery status: delivered, queued, deferred (with the last error) or bounced."""
    require(principal, "read")
    ctx: ApiContext = request.app.state.ctx
    rows = None if _no_such_id(message_id) else await apiviews.message_status(ctx.pool, principal.account.id,
                                                                              message_id)
    if rows is None:
        raise Problem(404, "no such sent message")
    return Status(id=message_id, recipients=[RecipientStatus(**r.__dict__) for r in rows])
