"""Unauthenticated endpoints: client autoconfiguration, our MTA-STS policy, health and metrics.

Autoconfig and MTA-STS answer only for domains we host (404 otherwise), so they reveal nothing MX
records do not. The documents themselves are built by `mailcore.autoconfig` and `mailcore.mtasts`.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Query, Request, Response

from mailcore import autoconfig, mtasts
from mailcore.address import AddressError, normalize_domain, parse_address
from mailserver.api.context import ApiContext
from mailserver.api.problems import Problem
from storage import accounts, apiviews

log = logging.getLogger("mailserver.api")
router = APIRouter(tags=["public"])

XML = "application/xml"


async def _hosted(ctx: ApiContext, domain: str) -> str:
    try:
        domain = normalize_domain(domain)
    except AddressError:
        raise Problem(404, "unknown domain") from None
    if not await accounts.is_local_domain(ctx.pool, domain):
        raise Problem(404, "unknown domain")
    return domain


def _address(text: str) -> str:
    try:
        return str(parse_address(text.strip()))
    except AddressError as exc:
        raise Problem(422, f"invalid email address: {exc}", kind="invalid-request") from None


async def _thunderbird(request: Request, emailaddress: str | None) -> Response:
    ctx: ApiContext = request.app.state.ctx
    if emailaddress:
        domain = _address(emailaddress).rpartition("@")[2]
    else:  # https://autoconfig.<domain>/mail/config-v1.1.xml: the domain is in the Host
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].lower()
        domain = host.removeprefix("autoconfig.")
    domain = await _hosted(ctx, domain)
    return Response(autoconfig.thunderbird(ctx.endpoints, domain), media_type=XML)


_EMAIL = Query(None, max_length=320, description="The address being set up (Thunderbird sends it).")


@router.get("/.well-known/autoconfig/mail/config-v1.1.xml", response_class=Response)
async def thunderbird_wellknown(request: Request, emailaddress: str | None = _EMAIL) -> Response:
    """Thunderbird autoconfig (clientConfig 1.1), looked up at the address's domain."""
    return await _thunderbird(request, emailaddress)


@router.get("/mail/config-v1.1.xml", response_class=Response)
async def thunderbird_autoconfig_host(request: Request, emailaddress: str | None = _EMAIL) -> Response:
    """Thunderbird autoconfig at https://autoconfig.<domain>/mail/config-v1.1.xml."""
    return await _thunderbird(request, emailaddress)


@router.post("/autodiscover/autodiscover.xml", response_class=Response)
@router.post("/Autodiscover/Autodiscover.xml", response_class=Response, include_in_schema=False)
async def outlook_autodiscover(request: Request) -> Response:
    """Outlook autodiscover (POX): POST the request document naming EMailAddress."""
    ctx: ApiContext = request.app.state.ctx
    address = autoconfig.autodiscover_request_address(await request.body())
    if address is None:
        raise Problem(422, "an autodiscover request with EMailAddress is expected", kind="invalid-request")
    address = _address(address)
    await _hosted(ctx, address.rpartition("@")[2])
    return Response(autoconfig.autodiscover(ctx.endpoints, address), media_type=XML)


@router.get("/mobileconfig", response_class=Response)
@router.get("/.well-known/mobileconfig", response_class=Response, include_in_schema=False)
async def apple_mobileconfig(request: Request,
                             emailaddress: str = Query(..., max_length=320)) -> Response:
    """An Apple configuration profile (.mobileconfig) for iOS and macOS Mail."""
    ctx: ApiContext = request.app.state.ctx
    address = _address(emailaddress)
    await _hosted(ctx, address.rpartition("@")[2])
    return Response(autoconfig.mobileconfig(ctx.endpoints, address), media_type="application/x-apple-aspen-config",
                    headers={"Content-Disposition": 'attachment; filename="mail.mobileconfig"'})


@router.get("/.well-known/mta-sts.txt", response_class=Response)
async def mta_sts_policy(request: Request) -> Response:
    """Our MTA-STS policy (RFC 8461 §3.2) for the hosted domain named by the Host, `mta-sts.<domain>`:
    `server.mta_sts_mode`, with `server.hostname` as the one MX."""
    ctx: ApiContext = request.app.state.ctx
    host = (request.headers.get("host") or "").rsplit(":", 1)[0].lower()
    if not host.startswith("mta-sts."):
        raise Problem(404, "not an mta-sts host name")
    await _hosted(ctx, host.removeprefix("mta-sts."))
    server = ctx.settings.server
    text, _ = mtasts.published(server.mta_sts_mode, [server.hostname])
    return Response(text, media_type="text/plain; charset=utf-8")


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    """200 when the database answers within two seconds, else 503."""
    ctx: ApiContext = request.app.state.ctx
    try:
        await asyncio.wait_for(ctx.pool.fetchval("SELECT 1"), 2.0)
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"; the cause goes to the log
        log.warning("health check failed", extra={"error": type(exc).__name__})
        raise Problem(503, "database unavailable", kind="unhealthy") from None
    return Response(b'{"status":"ok","database":"ok"}', media_type="application/json")


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition; queue gauges are read from the database at scrape time."""
    ctx: ApiContext = request.app.state.ctx
    if not ctx.settings.http.metrics:
        raise Problem(404)
    try:
        depth, age = await asyncio.wait_for(apiviews.queue_stats(ctx.pool), 2.0)
        ctx.metrics.queue_depth.set(depth)
        ctx.metrics.queue_oldest_age.set(age)
    except Exception as exc:  # noqa: BLE001 - serve the other metrics anyway
        log.warning("queue metrics unavailable", extra={"error": type(exc).__name__})
    body, content_type = await ctx.metrics.render_all()
    return Response(body, media_type=content_type)
