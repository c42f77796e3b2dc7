"""The indexer's decoding process (storage.textbatch run by storage.bodyindex.ProcessDecoder): it decodes
exactly what the in-thread decoder does, a child that dies is replaced at the next batch, a server whose
child cannot start decodes in a thread, and stopping the indexer ends the child."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import asyncpg
import pytest

from config.settings import SearchSettings
from mailcore.mime.precompute import summarize
from storage import bodyindex, mailsearch
from storage.bodyindex import DecoderLost, DecoderUnavailable, ProcessDecoder, ThreadDecoder
from storage.delivery import message_values
from storage.textbatch import Extracted
from tests.storage.textcorpus import CORPUS, deliver

MAX_TEXT = 256 * 1024


def claimed_rows() -> list[tuple[int, int, int, str]]:
    """(id, size, body_offset, parts) as the indexer's claim returns them, for the corpus."""
    rows = []
    for n, raw in enumerate(CORPUS, start=1):
        values = message_values(raw, summarize(raw))
        rows.append((n, values[1], values[3], values[7]))
    return rows


def same(got: Extracted) -> tuple[object, ...]:
    """What must agree between two decoders: the codes of a message as a set (their order in the array
    literal follows set iteration, which differs between processes: hashing is salted per process)."""
    codes = [frozenset(c.strip("{}").split(",")) for c in got.codes]
    return got.texts, codes, got.narrowable, got.complete, got.words, got.failed


async def decode(decoder: ThreadDecoder | ProcessDecoder) -> tuple[list[tuple[int, int]], Extracted]:
    planned = await decoder.plan(claimed_rows(), MAX_TEXT)
    windows = {i: CORPUS[i - 1][:length] for i, length in planned if length > 0}
    return planned, await decoder.extract(windows, MAX_TEXT)


async def test_the_process_decodes_what_the_thread_decodes() -> None:
    decoder = ProcessDecoder()
    try:
        planned, got = await decode(decoder)
        assert decoder.pid is not None and decoder.pid != os.getpid()
    finally:
        await decoder.close()
    want_planned, want = await decode(ThreadDecoder())
    assert planned == want_planned
    assert same(got) == same(want)
    assert any("zephyrquill" in text for text in got.texts) and got.words and not got.failed


async def test_a_dead_child_fails_one_batch_and_is_replaced() -> None:
    decoder = ProcessDecoder()
    try:
        await decode(decoder)
        first = decoder.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        with pytest.raises(DecoderLost):
            await decode(decoder)
        _, got = await decode(decoder)  # the next batch starts a new child
        assert decoder.pid not in (None, first)
        assert same(got) == same((await decode(ThreadDecoder()))[1])
    finally:
        await decoder.close()


async def test_an_unknown_call_is_refused_and_the_child_stays_usable() -> None:
    decoder = ProcessDecoder()
    try:
        with pytest.raises(DecoderLost, match="no such call"):
            await decoder._call("system", "true")
        assert (await decode(decoder))[1].texts
    finally:
        await decoder.close()


async def test_closing_ends_the_child() -> None:
    decoder = ProcessDecoder()
    await decode(decoder)
    pid = decoder.pid
    assert pid is not None
    await decoder.close()
    assert decoder.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # exited and reaped


async def test_the_service_decodes_in_a_child_and_ends_it_on_stop(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:  # noqa: F811
    service = bodyindex.TextIndexer(pool, SearchSettings(poll_interval=0.05))
    try:
        await service.index_pending()
        assert isinstance(service.decoder, ProcessDecoder)
        pid = service.decoder.pid
        assert pid is not None
    finally:
        await service.stop(0)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert service.indexed == len(CORPUS)


async def test_without_a_child_the_service_decodes_in_a_thread(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:  # noqa: F811
    service = bodyindex.TextIndexer(pool, SearchSettings(poll_interval=0.05))
    service.decoder = ProcessDecoder(executable="/nonexistent/python")
    with pytest.raises(DecoderUnavailable):
        await service.index_pending()
    await service.start()  # the service's loop falls back, then indexes
    try:
        await deliver(pool, text_box[0], b"Subject: late\r\n\r\nthreaded qwertyzap\r\n")
        for _ in range(600):
            if service.indexed == len(CORPUS) + 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await service.stop(0)
    assert isinstance(service.decoder, ThreadDecoder)
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "qwertyzap")) == [10]


@pytest.mark.parametrize("data", [b"", b"\x00" * 8, b"\x00\x00\x00\x00\x00\x00\x00\x05junk!", b"\x00\x00\x00\x00\x00\x00\x01\x00short"])
async def test_the_child_ends_quietly_on_input_that_is_not_a_request(data: bytes) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "storage.textbatch", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(data), 30)
    assert (proc.returncode, out, err) == (0, b"", b"")
