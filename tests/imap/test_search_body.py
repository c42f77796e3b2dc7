"""SEARCH BODY and TEXT through the full-text index, in transcripts: decoded text parts are found once
indexed, raw bytes before, and a binary attachment never."""

from __future__ import annotations

import pytest

from storage import bodyindex
from tests.imap.conftest import World, message

QP = message(1, body="Gr=C3=BC=C3=9Fe aus K=C3=B6ln, zephyr=\r\nquill\r\n", Content_Type="text/plain; charset=utf-8",
             Content_Transfer_Encoding="quoted-printable")
B64 = message(2, body="S8O2bG4gaXMgd2hlcmUgdGhlIHplcGh5cnF1aWxsIGxpdmVz\r\n", Content_Type="text/plain; charset=utf-8",
              Content_Transfer_Encoding="base64")  # "Köln is where the zephyrquill lives"
IMAGE = message(3, body="--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--B\r\nContent-Type: image/png\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\nemVwaHlycXVpbGwgS8O2bG4=\r\n--B--\r\n",
                Content_Type="multipart/mixed; boundary=B")
PLAIN = message(4, body="The ZephyrQuill, plainly.\r\n")


async def literal_search(c, tag: str, key: str, word: str) -> str:  # type: ignore[no-untyped-def]
    data = word.encode()
    return await c(f"{tag} UID SEARCH CHARSET UTF-8 {key} {{{len(data)}+}}\r\n".encode() + data)


@pytest.mark.parametrize("key,word,before,after", [
    ("BODY", "zephyrquill", "4", "1 2 4"),  # QP across a soft break and base64 are found once decoded
    ("BODY", "Köln", "", "1 2"),
    ("BODY", "KÖLN", "", "1 2"),
    ("BODY", "emVwaHly", "3", ""),  # an image's base64: in the raw bytes, not in the text
    ("BODY", "see attached", "3", "3"),
    ("BODY", "=C3=B6", "1", ""),
    ("BODY", "message 4", "", ""),  # the subject is not the body
    ("TEXT", "message 4", "4", "4"),  # TEXT is header or body
    ("TEXT", "köln", "", "1 2"),
    ("BODY", "nowhere at all", "", ""),
])
async def test_search_body_before_and_after_indexing(world: World, key: str, word: str, before: str,
                                                      after: str) -> None:
    for raw in (QP, B64, IMAGE, PLAIN):
        await world.deliver(raw)
    c = await world.client()
    await c("s SELECT INBOX")
    out = await literal_search(c, "a", key, word)
    assert out == f"* SEARCH{' ' if before else ''}{before}\r\na OK SEARCH completed\r\n"
    assert await bodyindex.index_all(world.pool) == 4
    out = await literal_search(c, "b", key, word)
    assert out == f"* SEARCH{' ' if after else ''}{after}\r\nb OK SEARCH completed\r\n"


async def test_search_body_combined_with_other_keys(world: World) -> None:
    for raw in (QP, B64, IMAGE, PLAIN):
        await world.deliver(raw)
    await bodyindex.index_all(world.pool)
    c = await world.client()
    await c("s SELECT INBOX")
    await c("f STORE 2 +FLAGS (\\Flagged)")
    assert await c("a SEARCH BODY zephyrquill NOT FLAGGED") == "* SEARCH 1 4\r\na OK SEARCH completed\r\n"
    assert await c("b SEARCH OR BODY attached BODY plainly") == "* SEARCH 3 4\r\nb OK SEARCH completed\r\n"
    assert await c("c SEARCH NOT BODY zephyrquill") == "* SEARCH 3\r\nc OK SEARCH completed\r\n"
    assert await c("d SEARCH 2:4 BODY zephyr") == "* SEARCH 2 4\r\nd OK SEARCH completed\r\n"
