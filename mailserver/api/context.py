"""What the HTTP API is built from: settings, the store, metrics, limits and the submission seam.

Routes read everything from one `ApiContext` (on `app.state.ctx`), so a test builds the API with its own
pool, metrics registry and limiters, and nothing is module-global. The limiters are the process's
(`mailcore.limits`, built once by the composition root and shared with SMTP and IMAP).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from config.settings import Settings
from mailcore.autoconfig import Endpoints, endpoints_from_settings
from mailcore.limits import AuthGuard, Limits
from mailcore.metrics import Metrics
from mailserver.api.submission import Submitter


@dataclass
class ApiContext:
    """Everything a request handler may use."""

    settings: Settings
    pool: asyncpg.Pool
    metrics: Metrics
    limits: Limits
    submitter: Submitter
    endpoints: Endpoints
    auth: AuthGuard

    @classmethod
    def build(cls, settings: Settings, pool: asyncpg.Pool, metrics: Metrics, limits: Limits,
              submitter: Submitter) -> ApiContext:
        """A context whose client endpoints come from the configured listeners."""
        return cls(settings=settings, pool=pool, metrics=metrics, limits=limits, submitter=submitter,
                   endpoints=endpoints_from_settings(settings), auth=AuthGuard(limits, metrics))
