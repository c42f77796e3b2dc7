"""The HTTP API: an ASGI application (FastAPI) built from an `ApiContext`.

`create_app(ctx)` returns the application wrapped in its middleware; `mailserver.api.server` serves it
with uvicorn on the server's own event loop. Versioned routes live under `/v1`; autoconfig, `/healthz`
and `/metrics` outside it. OpenAPI is at `/openapi.json`, interactive docs at `/docs`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from mailserver.api import problems, routes_mail, routes_public, routes_read
from mailserver.api.context import ApiContext
from mailserver.api.middleware import AnsweredErrors, BodyLimit, Timing


def create_app(ctx: ApiContext) -> Any:
    """The API application for `ctx`, with the size cap, request timing and single error logging around it."""
    app = FastAPI(title="mailserver API", version="1", description="Send and read mail over HTTP. "
                  "Authenticate with an API token (`Authorization: Bearer mst_...`) or HTTP Basic over TLS. "
                  "Errors are RFC 9457 problem details.")
    app.state.ctx = ctx
    problems.install(app)
    app.include_router(routes_mail.router)
    app.include_router(routes_read.router)
    app.include_router(routes_public.router)
    _document_send_body(app)
    return Timing(BodyLimit(AnsweredErrors(app), ctx.settings.http.max_request_size), ctx.metrics)


def _document_send_body(app: FastAPI) -> None:
    """Add the JSON send body to the OpenAPI components: the route reads it itself (it also takes
    message/rfc822), so FastAPI does not see the model on its own."""
    from fastapi.openapi.utils import get_openapi

    from mailserver.api.compose import SendRequest

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            model = SendRequest.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(model.pop("$defs", {}))
            components["SendRequest"] = model
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
