"""`POST /v1/send` and `POST /v1/receive`: messages in, through the `Submitter` seam.

Owns request decoding (JSON or `message/rfc822`), the Idempotency-Key protocol around a send, the
per-account message limit and the mapping of refusals to problem documents. It builds no delivery itself.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from mailcore.received import clean
from mailserver.api.auth import Caller, Principal, client_ip, require
from mailserver.api.compose import ComposeError, SendRequest, compose, envelope_of_raw, wire_form
from mailserver.api.context import ApiContext
from mailserver.api.problems import RETRY_AFTER, Problem, too_many
from mailserver.api.submission import Accepted, Envelope, SubmissionRefused
from storage import idempotency
from storage.idempotency import ClaimState

log = logging.getLogger("mailserver.api")
router = APIRouter(prefix="/v1", tags=["mail"])

RFC822 = "message/rfc822"
# Refusal reason -> (HTTP status, problem type).
REFUSALS = {
    "sender_not_owned": (403, "sender-not-owned"),
    "unknown_recipient": (422, "unknown-recipient"),
    "not_local": (422, "not-local"),
    "mailbox_full": (422, "mailbox-full"),
    "too_large": (413, "too-large"),
    "policy": (422, "refused"),
    "dmarc": (422, "dmarc-rejected"),
    "temporary": (503, "temporarily-unavailable"),
}


class RecipientResult(BaseModel):
    """Where one recipient's copy went."""

    address: str
    status: str  # delivered (local), queued, or bounced (local, mailbox full: the sender gets a DSN)


class SendResult(BaseModel):
    """The accepted message."""

    id: int
    message_id: str | None
    status_url: str | None  # for sends; null for /v1/receive
    recipients: list[RecipientResult]


_SEND_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SendRequest"}},
            RFC822: {"schema": {"type": "string", "format": "binary"},
                     "description": "A complete RFC 5322 message; the envelope is From and To/Cc/Bcc."},
        },
    },
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _refused(ctx: ApiContext, via: str, exc: SubmissionRefused) -> Problem:
    ctx.metrics.messages_rejected.labels(via, exc.reason).inc()
    status, kind = REFUSALS.get(exc.reason, (422, "refused"))
    extra: dict[str, Any] = {"recipients": exc.recipients} if exc.recipients else {}
    headers = {"Retry-After": str(RETRY_AFTER)} if status == 503 else None
    return Problem(status, exc.text, kind=kind, headers=headers, **extra)


async def _decode(request: Request, body: bytes) -> tuple[str, list[str], bytes]:
    media = _media_type(request)
    try:
        if media == RFC822:
            return envelope_of_raw(body)
        if media in ("application/json", ""):
            try:
                req = SendRequest.model_validate_json(body)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(include_url=False)) from None
            return compose(req)
    except ComposeError as exc:
        raise Problem(422, str(exc), kind="invalid-message") from None
    raise Problem(415, f"send application/json or {RFC822}")


def _check_recipient_count(ctx: ApiContext, via: str, recipients: list[str]) -> None:
    """422 when a message names more distinct recipients than `smtp.max_recipients`.

    SMTP refuses RCPT past that limit (452 4.5.3); without the same check here, one API request (one
    token of the `messages` limit) could address any number of remote recipients."""
    limit = ctx.settings.smtp.max_recipients
    if len({r.lower() for r in recipients}) > limit:
        ctx.metrics.messages_rejected.labels(via, "too_many_recipients").inc()
        raise Problem(422, f"a message may have at most {limit} recipients", kind="too-many-recipients")


def _result(accepted: Accepted) -> dict[str, Any]:
    return SendResult(
        id=accepted.message_id, message_id=accepted.rfc_message_id,
        status_url=f"/v1/messages/{accepted.message_id}/status",
        recipients=[RecipientResult(address=a, status="delivered") for a in accepted.local]
        + [RecipientResult(address=a, status="queued") for a in accepted.queued]
        + [RecipientResult(address=a, status="bounced") for a in accepted.bounced],
    ).model_dump()


@router.post("/send", status_code=202, response_model=SendResult, openapi_extra=_SEND_BODY,
             responses={403: {"description": "sender not yours, or no send scope"},
                        409: {"description": "a request with this Idempotency-Key is in progress"},
                        413: {"description": "too large"}, 422: {"description": "invalid message"},
                        429: {"description": "rate limited (Retry-After)"}})
async def send(request: Request, principal: Caller) -> JSONResponse:
    """Send a message through the submission path (JSON or raw `message/rfc822`).

    With an `Idempotency-Key` header, the same key and body return the first response again (with
    `Idempotent-Replayed: true`) and never send twice; the same key with another body is 422.
    """
    require(principal, "send")
    ctx: ApiContext = request.app.state.ctx
    body = await request.body()
    key = request.headers.get("idempotency-key")
    account_id = principal.account.id
    if key is not None:
        if not 1 <= len(key) <= 255 or not key.isprintable():
            raise Problem(422, "Idempotency-Key must be 1-255 printable characters", kind="invalid-request")
        request_hash = hashlib.sha256(_media_type(request).encode() + b"\0" + body).digest()
        claim = await idempotency.claim(ctx.pool, account_id, key, request_hash, ctx.settings.http.idempotency_ttl)
        if claim.state is ClaimState.DONE:
            return JSONResponse(claim.response, status_code=claim.status or 200,
                                headers={"Idempotent-Replayed": "true"})
        if claim.state is ClaimState.IN_PROGRESS:
            raise Problem(409, "a request with this Idempotency-Key is still in progress", kind="in-progress")
        if claim.state is ClaimState.MISMATCH:
            raise Problem(422, "this Idempotency-Key was used with a different request", kind="key-reused")
    try:
        result = await _send(ctx, request, principal, body)
    except BaseException:
        if key is not None:
            await idempotency.release(ctx.pool, account_id, key)
        raise
    if key is not None:
        await idempotency.complete(ctx.pool, account_id, key, 202, result)
    return JSONResponse(result, status_code=202, headers={"Location": result["status_url"]})


async def _send(ctx: ApiContext, request: Request, principal: Principal, body: bytes) -> dict[str, Any]:
    sender, recipients, raw = await _decode(request, body)
    _check_recipient_count(ctx, "api_send", recipients)
    if len(raw) > ctx.settings.smtp.max_message_size:
        ctx.metrics.messages_rejected.labels("api_send", "too_large").inc()
        raise Problem(413, f"message exceeds {ctx.settings.smtp.max_message_size} bytes", kind="too-large")
    decision = await ctx.limits.messages.take(f"account:{principal.account.id}")
    if not decision.allowed:
        ctx.metrics.messages_rejected.labels("api_send", "rate_limited").inc()
        raise too_many(ctx.limits.messages.name, decision.retry_after)
    envelope = Envelope(mail_from=sender, recipients=recipients, raw=raw, client_ip=client_ip(request),
                        tls=request.url.scheme == "https")
    started = time.perf_counter()
    try:
        accepted = await ctx.submitter.submit(principal.account, envelope)
    except SubmissionRefused as exc:
        raise _refused(ctx, "api_send", exc) from None
    ctx.metrics.delivery_duration.labels("api_send").observe(time.perf_counter() - started)
    ctx.metrics.messages_received.labels("api_send").inc()
    if accepted.local:
        ctx.metrics.deliveries.labels("local").inc(len(accepted.local))
    log.info("api send accepted", extra={"account": principal.account.address, "message_row": accepted.message_id,
                                         "local": len(accepted.local), "queued": len(accepted.queued)})
    return _result(accepted)


def _smtp_client_ip(value: str | None) -> str | None:
    """The X-Client-IP header: an IPv4 or IPv6 address (422 otherwise), or None when absent.

    An IPv6 address with a zone (`fe80::1%eth0`) is refused too: `ipaddress` accepts it, but it names
    an interface of the gateway's host, not an SMTP client SPF could judge (pyspf failed on it)."""
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        address = None
    if address is None or getattr(address, "scope_id", None):
        raise Problem(422, "X-Client-IP must be an IPv4 or IPv6 address", kind="invalid-request")
    return str(address)


@router.post("/receive", status_code=202, response_model=SendResult,
             openapi_extra={"requestBody": {"required": True, "content": {
                 RFC822: {"schema": {"type": "string", "format": "binary"}}}}},
             responses={403: {"description": "not an admin token"},
                        422: {"description": "not local, invalid X-Client-IP, or refused by the From domain's "
                                             "DMARC policy (type .../dmarc-rejected)"},
                        503: {"description": "sender authentication could not finish (DNS); retry "
                                             "(Retry-After)"}})
async def receive(request: Request, principal: Caller,
                  to: Annotated[list[str], Query(description="Envelope recipients (local).")],
                  mail_from: Annotated[str, Query(alias="from", description="Envelope sender ('' for bounces).")] = "",
                  x_client_ip: Annotated[str | None, Header(
                      description="Address of the SMTP client the gateway received the message from (SPF).")] = None,
                  x_client_helo: Annotated[str | None, Header(
                      description="HELO/EHLO name that SMTP client gave.")] = None,
                  ) -> JSONResponse:
    """Ingest a raw message for local recipients, as the MX listener would (admin tokens only).

    Sender authentication runs as on the MX: SPF of the envelope sender against `X-Client-IP` (without
    it SPF is `none`, client address unknown), DKIM, ARC and DMARC; an Authentication-Results field is
    added and forged ones naming this server are removed. A DMARC reject is 422 `dmarc-rejected`, a
    quarantine is delivered to Junk, a DNS temperror is 503 with Retry-After.
    """
    require(principal, "admin")
    ctx: ApiContext = request.app.state.ctx
    smtp_client_ip = _smtp_client_ip(x_client_ip)
    # as the MX reads a HELO name: no controls, parentheses or backslashes (they reach Received and the
    # Authentication-Results comments), at most 255 characters
    smtp_helo = clean(x_client_helo.strip()) if x_client_helo and x_client_helo.strip() else None
    if _media_type(request) != RFC822:
        raise Problem(415, f"send the message as {RFC822}")
    raw = await request.body()
    if not raw.strip():
        raise Problem(422, "empty message", kind="invalid-message")
    try:
        raw = wire_form(raw)
    except ComposeError as exc:
        raise Problem(422, str(exc), kind="invalid-message") from None
    _check_recipient_count(ctx, "api_receive", to)
    if len(raw) > ctx.settings.smtp.max_message_size:
        ctx.metrics.messages_rejected.labels("api_receive", "too_large").inc()
        raise Problem(413, f"message exceeds {ctx.settings.smtp.max_message_size} bytes", kind="too-large")
    envelope = Envelope(mail_from=mail_from, recipients=to, raw=raw, client_ip=client_ip(request),
                        tls=request.url.scheme == "https", smtp_client_ip=smtp_client_ip, smtp_helo=smtp_helo)
    started = time.perf_counter()
    try:
        accepted = await ctx.submitter.receive(envelope)
    except SubmissionRefused as exc:
        raise _refused(ctx, "api_receive", exc) from None
    ctx.metrics.delivery_duration.labels("api_receive").observe(time.perf_counter() - started)
    ctx.metrics.messages_received.labels("api_receive").inc()
    if accepted.local:
        ctx.metrics.deliveries.labels("local").inc(len(accepted.local))
    return JSONResponse({**_result(accepted), "status_url": None}, status_code=202)
