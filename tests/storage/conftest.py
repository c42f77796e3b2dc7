"""Fixtures shared by the storage tests."""

from __future__ import annotations

import asyncpg
import pytest

from storage import accounts, mailstore
from tests.storage.textcorpus import CORPUS, deliver


@pytest.fixture
async def text_box(pool: asyncpg.Pool) -> tuple[int, int]:
    """An account (u@example.test) whose INBOX holds `CORPUS`, UIDs 1.. in order: (account id, mailbox id)."""
    await accounts.add_domain(pool, "example.test")
    account = await accounts.add_account(pool, "u@example.test", "x")
    for raw in CORPUS:
        await deliver(pool, account, raw)
    mailbox = await mailstore.get_mailbox(pool, account, "INBOX")
    assert mailbox is not None
    return account, mailbox.id
