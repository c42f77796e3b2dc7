"""The full-text index behind SEARCH BODY/TEXT: `message_texts` (migration 0009) and its background indexer.

Owns: finding messages that have no text row yet, reading only the stretches of their raw bytes that hold
text, decoding them (`storage.textbatch`, in a process of its own: the server's event loop and GIL never
decode), and storing the rows in batches, after a burst of mail rather than during it (`Pacing`).
Delivery and APPEND write nothing here; a message is searchable in its raw bytes until its row exists
(`storage.mailsearch`), so a lagging or absent indexer costs speed, never results. Several instances may
index at once: each batch locks its messages with SKIP LOCKED.
Must not: know IMAP, or hold a message's lock longer than one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from config.settings import SearchSettings
from mailcore.mime.searchtext import code_of_utf8
from mailcore.pipeframes import frame, receive_frame
from storage.mailsearch import INDEX_NAMES
from storage.textbatch import BatchDecoder, Extracted

log = logging.getLogger(__name__)
# Where the `storage` package is, installed or run from a checkout: the decoding process imports it.
_ROOT = str(Path(__file__).resolve().parent.parent)

# How far behind the highest id indexed the next pass starts: deliveries commit out of id order, so a
# message with a lower id may become visible after a higher one was indexed. A full pass from id 0
# runs every FULL_PASS_SECONDS to catch anything older (rows skipped because another instance held them
# and then failed, for example).
_LAG_IDS = 2000
FULL_PASS_SECONDS = 600.0

# The look-up of texts repeats the bound on ids: PostgreSQL does not carry `m.id > $1` over to
# `t.message_id`, and the plan a prepared statement settles on (made for any floor) then hashes the WHOLE
# of message_texts for every batch, a sequential scan growing with the database: at 60,000 indexed
# messages the indexer's PostgreSQL time was 0.32 ms a message instead of 0.07. With the bound, both
# primary keys are read over the batch's range only.
_CLAIM = (
    "SELECT m.id, m.size, m.body_offset, m.parts FROM messages m"
    " WHERE m.id > $1 AND NOT EXISTS (SELECT 1 FROM message_texts t WHERE t.message_id = m.id"
    " AND t.message_id > $1)"
    " ORDER BY m.id LIMIT $2 FOR NO KEY UPDATE OF m SKIP LOCKED")
_READ = (
    "SELECT w.id, substring(m.raw FROM 1 FOR w.len) AS window"
    " FROM unnest($1::bigint[], $2::integer[]) AS w(id, len) JOIN messages m ON m.id = w.id")
# The batch's texts and its new words in one statement (one round trip). The words come in sorted order,
# so that two indexers adding the same new words lock them in the same order; the texts and the words
# commit together, so a search never sees a text whose words it cannot look up.
_STORE = (
    "WITH vocabulary AS (INSERT INTO search_words (word, code) SELECT * FROM unnest($6::text[], $7::integer[])"
    " ON CONFLICT (word) DO NOTHING)"
    " INSERT INTO message_texts (message_id, text, words, complete)"
    " SELECT id, text, CASE WHEN narrowable THEN codes::integer[] END, complete"
    " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::boolean[], $5::boolean[])"
    " AS r(id, text, codes, narrowable, complete) ON CONFLICT (message_id) DO NOTHING")
# Words (UTF-8) known to be in search_words of the indexer's database: not sent again. Only words whose
# insert committed are added, so a word in it is in the table (or was, with an admin's DELETE: it then
# matches no text it is in, until the cache is emptied). A word another instance added is sent once more
# and costs one ON CONFLICT look-up, no trigram index entry. Bounded; when full it is emptied, which
# costs one round of such look-ups, nothing else.
_KNOWN_MAX = 200_000
# The GIN indexes whose pending lists `merge_pending` merges when mail stops: every index SEARCH reads,
# the header one included. Left alone, its list (up to 1 MB, about 8,000 messages' trigrams) is read
# linearly by every SEARCH FROM/TO/SUBJECT until a delivery fills it, and that delivery then pays the
# whole merge inside its commit.
_GIN_INDEXES = tuple(INDEX_NAMES.values())


# The highest id stored: whether mail arrived since the last look (a backward scan of the primary key).
_TOP = "SELECT COALESCE(max(id), 0) FROM messages"


class Pacing:
    """When the indexer runs: at once when no mail arrived since its last look; while mail keeps arriving,
    only once it has waited `max_defer` seconds. Indexing competes with delivery for the same cores (a
    quarter of the accept rate in a burst of 20 KB messages, bench/README.md), so a burst is stored first
    and indexed after; under steady inflow the index still follows within `max_defer` plus one pass.
    Sans-IO: fed the highest message id and the time at each look."""

    def __init__(self, max_defer: float) -> None:
        self.max_defer = max_defer
        self._top: int | None = None
        self._waiting_since: float | None = None

    def due(self, top: int, now: float) -> bool:
        """Whether to index now, given the highest message id seen at `now` (monotonic seconds)."""
        arriving = self._top is not None and top != self._top
        self._top = top
        if arriving and self.max_defer > 0:
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < self.max_defer:
                return False
        self._waiting_since = None
        return True


class ThreadDecoder:
    """`textbatch.BatchDecoder` in a worker thread: what tests and `index_all` use, and the indexer's
    fallback when its decoding process cannot start."""

    def __init__(self) -> None:
        self._decoder = BatchDecoder()

    async def plan(self, rows: list[tuple[int, int, int, Any]], max_text: int) -> list[tuple[int, int]]:
        return await asyncio.to_thread(self._decoder.plan, rows, max_text)

    async def extract(self, windows: dict[int, bytes], max_text: int) -> Extracted:
        return await asyncio.to_thread(self._decoder.extract, windows, max_text)

    async def close(self) -> None:
        return None


class DecoderLost(OSError):
    """The decoding process died or could not be reached; the batch is rolled back and done again."""


class DecoderUnavailable(DecoderLost):
    """The decoding process could not be started at all (the indexer then decodes in a thread)."""


class ProcessDecoder:
    """`textbatch.BatchDecoder` in a child process (`python -m storage.textbatch`), started at the first
    batch and again after it dies. One batch at a time (the indexer's one task). A call cut short (the
    server stopping) kills the child: the pipe may hold half a reply."""

    def __init__(self, executable: str = sys.executable) -> None:
        self.executable = executable
        self._proc: asyncio.subprocess.Process | None = None

    async def _start(self) -> asyncio.subprocess.Process:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p))
        try:
            # its own session: a Ctrl-C at the terminal reaches the server, which then closes the pipe
            return await asyncio.create_subprocess_exec(
                self.executable, "-m", "storage.textbatch", env=env, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise DecoderUnavailable(f"cannot start the search text decoder: {exc!r}") from exc

    async def _call(self, name: str, *args: Any) -> Any:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            proc = self._proc = await self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(frame((name, args)))
            await proc.stdin.drain()
            status, value = await receive_frame(proc.stdout)
        except BaseException as exc:
            self._kill()
            if isinstance(exc, (OSError, EOFError)):
                raise DecoderLost(f"search text decoder: {exc!r}") from exc
            raise
        if status != "ok":
            raise DecoderLost(f"search text decoder: {value}")
        return value

    @property
    def pid(self) -> int | None:
        """The running child's process id, if one runs."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
        self._proc = None

    async def plan(self, rows: list[tuple[int, int, int, Any]], max_text: int) -> list[tuple[int, int]]:
        return await self._call("plan", rows, max_text)  # type: ignore[no-any-return]

    async def extract(self, windows: dict[int, bytes], max_text: int) -> Extracted:
        return await self._call("extract", windows, max_text)  # type: ignore[no-any-return]

    async def close(self) -> None:
        """End the child: closing its input ends it; killed if it does not go within two seconds."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()


Decoder = ThreadDecoder | ProcessDecoder


async def index_batch(pool: asyncpg.Pool, *, after: int = 0, batch: int = 200, max_text: int = 256 * 1024,
                      known: set[bytes] | None = None, decoder: Decoder | None = None) -> tuple[int, int, int]:
    """Index up to `batch` messages with ids above `after` that have no text row: (how many claimed, how
    many stored, highest id claimed or `after` when none). Two indexers may rarely claim the same message
    (one commits just before the other's look-up); the second's row is then dropped (ON CONFLICT). One transaction: the texts appear together with their words in the
    vocabulary (so a search never sees a text whose words it cannot look up); the locks go at commit.
    `known`: words already in this database's vocabulary, kept across batches by the caller (updated).
    `decoder`: where the texts are decoded (default: a worker thread)."""
    known = set() if known is None else known
    decoder = ThreadDecoder() if decoder is None else decoder
    async with pool.acquire() as conn, conn.transaction():
        # The index is derived data: a crash that loses the last batches loses nothing (their messages
        # are indexed again), so the indexer does not wait for, nor add, WAL flushes that deliveries'
        # commits wait on.
        await conn.execute("SET LOCAL synchronous_commit = off")
        claimed = await conn.fetch(_CLAIM, after, batch)
        if not claimed:
            return 0, 0, after
        planned = await decoder.plan([(r["id"], r["size"], r["body_offset"], r["parts"]) for r in claimed],
                                     max_text)
        reading = [(i, length) for i, length in planned if length > 0]
        windows: dict[int, bytes] = {}
        if reading:
            rows = await conn.fetch(_READ, [i for i, _ in reading], [length for _, length in reading])
            windows = {r["id"]: r["window"] for r in rows}
        got = await decoder.extract(windows, max_text)
        for message_id, error in got.failed:
            log.error("text extraction failed; message left to raw search",
                      extra={"message_id": message_id, "error": error})
        new_words = sorted(got.words - known)
        status = await conn.execute(_STORE, [i for i, _ in planned], got.texts, got.codes, got.narrowable,
                                    got.complete, [w.decode() for w in new_words], [code_of_utf8(w) for w in new_words])
    if len(known) >= _KNOWN_MAX:
        known.clear()
    known.update(new_words)
    return len(planned), int(status.split()[-1]), claimed[-1]["id"]


async def index_all(pool: asyncpg.Pool, *, batch: int = 200, max_text: int = 256 * 1024) -> int:
    """Index every message without a text row now (tests, and an admin catching up); how many stored."""
    total, after, known = 0, 0, set[bytes]()
    while True:
        n, stored, after = await index_batch(pool, after=after, batch=batch, max_text=max_text, known=known)
        total += stored
        if n < batch:
            return total


async def merge_pending(pool: asyncpg.Pool) -> None:
    """Merge the GIN indexes' pending lists now, in bulk (cheap per row), rather than leave each SEARCH
    to read the recent rows' entries linearly until autovacuum comes by. Done when the indexer is idle:
    while mail keeps arriving, the list merges itself when full (4 MB), within the indexer's inserts."""
    with contextlib.suppress(asyncpg.PostgresError):  # e.g. a role that does not own the index
        await pool.execute("SELECT gin_clean_pending_list(i) FROM unnest($1::text[]) AS n, to_regclass(n) AS i"
                           " WHERE i IS NOT NULL", list(_GIN_INDEXES))


class TextIndexer:
    """The indexer as a `Service` of the server (see `mailserver.app`): one task that looks every
    `poll_interval` seconds and, when `Pacing` says so, indexes batches until no message is left."""

    name = "search-indexer"

    def __init__(self, pool: asyncpg.Pool, settings: SearchSettings) -> None:
        self.pool = pool
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._floor = 0
        self._last_full = 0.0
        self._known: set[bytes] = set()
        self._unmerged = False
        self.indexed = 0
        self.pacing = Pacing(settings.max_defer)
        self.decoder: Decoder = ProcessDecoder()

    async def start(self) -> None:
        """Begin indexing in the background (from id 0: the first pass finds whatever is missing)."""
        self._last_full = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="search-indexer")

    async def stop(self, grace: float) -> None:
        """Stop at once: a batch cut short is rolled back and done again later, by any instance."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.decoder.close()

    async def _run(self) -> None:
        s = self.settings
        while True:
            try:
                await self.look()
            except asyncio.CancelledError:
                raise
            except DecoderUnavailable as exc:
                log.warning("search text decoding falls back to a thread", extra={"error": repr(exc)})
                self.decoder = ThreadDecoder()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("search indexing failed; retrying after the poll interval", extra={"error": repr(exc)})
            await asyncio.sleep(s.poll_interval)

    async def look(self) -> bool:
        """One look: index whatever is pending if `Pacing` says it is time; whether it did."""
        if not self.pacing.due(await self.pool.fetchval(_TOP), time.monotonic()):
            return False
        await self.index_pending()
        return True

    async def index_pending(self) -> None:
        """One pass: index from the floor up until caught up; then move the floor to just behind the
        highest id seen (what the service does when `look` finds it due; bench/indexcpu.py times it)."""
        s = self.settings
        if time.monotonic() - self._last_full > FULL_PASS_SECONDS:
            self._floor, self._last_full = 0, time.monotonic()
        after = top = self._floor
        stored_now = 0
        while True:
            n, stored, after = await index_batch(self.pool, after=after, batch=s.batch, max_text=s.max_text,
                                                 known=self._known, decoder=self.decoder)
            stored_now += stored
            top = max(top, after)
            if n < s.batch:
                break
        self.indexed += stored_now
        self._floor = max(self._floor, top - _LAG_IDS)
        if stored_now:
            self._unmerged = True
        elif self._unmerged:  # caught up and mail has stopped arriving: a quiet moment to merge
            await merge_pending(self.pool)
            self._unmerged = False
