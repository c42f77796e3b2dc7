"""SEARCH on header fields in a session over a real store: the keys narrowed by the header trigram index
(migration 0012) and HEADER of the sync fields it leaves out answer alike, each finding its message."""

from __future__ import annotations

import pytest

from storage import mailsearch
from tests.imap.conftest import World, message

MESSAGES = [
    message(1, subject="Quarterly zorblax figures", Cc="Carla Cee <carla@example.net>",
            References="<root77@example.org>\r\n <mid88@example.org>"),
    message(2, subject="=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", Bcc="hidden.bee@example.net",
            In_Reply_To="<parent99@example.org>"),
    message(3, subject="plain", Content_Type='multipart/mixed; boundary="zqbound42"'),
]


@pytest.mark.parametrize("criteria,expected", [
    ("SUBJECT zorblax", "1"),
    ("HEADER Subject \"zorblax fig\"", "1"),
    ("SUBJECT \"=?UTF-8?Q?Gr\"", "2"),  # the raw encoded word
    ("SUBJECT \"aus K\"", "2"),  # the decoded subject
    ("FROM \"Bob Sender <bob3\"", "3"),
    ("TO \"Alice <alice@\"", "1 2 3"),
    ("CC \"Carla Cee\"", "1"),
    ("CC carla@example", "1"),
    ("BCC hidden.bee", "2"),
    ("HEADER BCC \"bee@example\"", "2"),
    ("HEADER Message-ID <m2@example", "2"),
    ("HEADER References mid88@", "1"),
    ("HEADER In-Reply-To parent99", "2"),
    ("HEADER Content-Type zqbound42", "3"),
    ("HEADER Date \"2 Nov 2026\"", "1 2 3"),
    ("FROM mid88", ""),  # only in References
    ("SUBJECT zqbound42", ""),  # only in Content-Type
    ("OR CC carla HEADER In-Reply-To parent99", "1 2"),
])
async def test_header_search_keys(world: World, criteria: str, expected: str) -> None:
    assert "fields" in await mailsearch.available_indexes(world.pool)  # the index is there and used
    for raw in MESSAGES:
        await world.deliver(raw)
    c = await world.client()
    await c("s SELECT INBOX")
    out = await c(f"a SEARCH {criteria}")
    assert out == f"* SEARCH{' ' if expected else ''}{expected}\r\na OK SEARCH completed\r\n"
