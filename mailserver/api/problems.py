"""Errors as RFC 9457 problem details (`application/problem+json`), produced in exactly one place.

Routes raise `Problem` (or let FastAPI raise its own HTTP and validation errors); the handlers here turn
every one of them into a problem document. Losing the database (`storage.db.UNAVAILABLE_ERRORS`) is 503
with Retry-After, as SMTP says 451 and IMAP NO [UNAVAILABLE]: the client retries, the log gets one warning.
Any other exception becomes a generic 500: the cause goes to the log (once: see
`mailserver.api.middleware.AnsweredErrors`), never to the client (no class names, no messages).
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage.db import UNAVAILABLE_ERRORS

log = logging.getLogger("mailserver.api")

PROBLEM_JSON = "application/problem+json"
# Problem types specific to this API; the rest use "about:blank" with the HTTP status title (RFC 9457 §4.2.1).
TYPE_BASE = "https://mailserver.invalid/problems/"
WWW_AUTHENTICATE = 'Bearer realm="mailserver", Basic realm="mailserver", charset="UTF-8"'
# Retry-After on a 503 (a temporary failure: the database away, or sender authentication's DNS), in seconds.
RETRY_AFTER = 60


class Problem(Exception):
    """An error to send as a problem document. `kind` names a specific problem type, if any."""

    def __init__(self, status: int, detail: str | None = None, *, kind: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.headers = headers or {}
        self.extra = extra


def unauthorized(detail: str = "authentication required") -> Problem:
    """401 with the challenge for both schemes we accept (RFC 9110 §11.6.1)."""
    return Problem(401, detail, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def too_many(limiter: str, retry_after: float) -> Problem:
    """429 with Retry-After in whole seconds, never 0 (RFC 6585 §4, RFC 9110 §10.2.3)."""
    seconds = max(1, math.ceil(retry_after))
    return Problem(429, f"rate limit '{limiter}' exceeded; retry in {seconds} s", kind="rate-limited",
                   headers={"Retry-After": str(seconds)}, limiter=limiter)


def problem_response(status: int, detail: str | None = None, *, kind: str | None = None,
                     headers: dict[str, str] | None = None, instance: str | None = None,
                     **extra: Any) -> JSONResponse:
    """Build one problem+json response."""
    body: dict[str, Any] = {"type": TYPE_BASE + kind if kind else "about:blank",
                            "title": HTTPStatus(status).phrase, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, kind=exc.kind, headers=exc.headers,
                                instance=request.url.path, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != HTTPStatus(exc.status_code).phrase \
            else None
        return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None),
                                instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"location": [str(p) for p in e.get("loc", ())], "message": str(e.get("msg", ""))}
                  for e in exc.errors()]
        return problem_response(422, "the request is not valid", kind="invalid-request",
                                instance=request.url.path, errors=errors)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("api request failed: database unavailable", extra={
            "path": request.url.path, "method": request.method, "error": f"{type(exc).__name__}: {exc}"})
        return problem_response(503, "temporarily unavailable; try again later", kind="temporarily-unavailable",
                                headers={"Retry-After": str(RETRY_AFTER)}, instance=request.url.path)

    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("api request failed", exc_info=exc,
                  extra={"path": request.url.path, "method": request.method})
        return problem_response(500, "internal error; see the server log", instance=request.url.path)
