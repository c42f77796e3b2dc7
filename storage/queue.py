"""The outbound queue's SQL: claiming due entries, recording results, rescheduling, and administration.

Owns every statement on `queue` and `queue_recipients` after submission (rows are written by
`storage.delivery`). Claims take row locks with `FOR UPDATE SKIP LOCKED` only for the instant of the
claim; what keeps other workers away afterwards is the lease (`lease_owner`, `lease_expires`). Every write
a worker makes is fenced by its lease owner, so a worker whose lease ran out and was taken over cannot
overwrite the new owner's results. An entry whose recipients are all final is deleted (the history stays
in `delivery_log`), and its message row with it when nothing else points at it.

Times come from the caller (an injectable clock), never from `now()`, so tests can move time.
It knows no SMTP and builds no messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from storage.accounts import StoreError, delete_unreferenced

log = logging.getLogger(__name__)

QUEUE_CHANNEL = "queue_changes"

Conn = asyncpg.Connection | asyncpg.Pool
Status = Literal["delivered", "deferred", "bounced"]

_RCPT_COLUMNS = ("id, recipient, domain, status, notify, orcpt, attempts, last_error, status_code,"
                 " remote_mta, last_attempt")
_QUEUE_COLUMNS = ("q.id, q.message_id, q.sender, q.account_id, q.envid, q.ret, q.state, q.created_at,"
                  " q.next_attempt, q.attempts, q.last_error, q.lease_owner, q.lease_expires, q.signed,"
                  " q.signed_prefix, q.delay_notified")

_RCPT_NAMES = tuple(c.strip() for c in _RCPT_COLUMNS.split(","))
_CLAIM = (
    "WITH c AS ("
    "  UPDATE queue q SET lease_owner = $1, lease_expires = $2, attempts = q.attempts + 1"
    "  WHERE q.id IN (SELECT id FROM queue WHERE state = 'queued' AND next_attempt <= $3"
    "    AND (lease_expires IS NULL OR lease_expires <= $3)"
    "    ORDER BY next_attempt LIMIT $4 FOR UPDATE SKIP LOCKED)"
    f"  RETURNING {_QUEUE_COLUMNS}"
    ") SELECT c.*, CASE WHEN $5::bigint IS NULL OR octet_length(m.raw) <= $5::bigint THEN m.raw END AS raw, " + ", ".join(f"r.r_{c}" for c in _RCPT_NAMES) + " FROM c"
    " LEFT JOIN messages m ON m.id = c.message_id LEFT JOIN LATERAL ("
    "  SELECT " + ", ".join(f"array_agg({c} ORDER BY id) AS r_{c}" for c in _RCPT_NAMES) +
    "  FROM queue_recipients WHERE queue_id = c.id AND status IN ('pending', 'deferred')"
    ") r ON true ORDER BY c.next_attempt"
)

# The fence (the entry's row lock, only while `owner` holds the lease) and, when it holds, every
# outcome ($4.. arrays in order: recipient id, status, reply, status code, remote MTA, log detail) with
# its delivery_log line, at $3. Returns the entry's message id, or no row: nothing was written.
_RECORD = (
    "WITH held AS (SELECT message_id FROM queue WHERE id = $1 AND lease_owner = $2 FOR UPDATE"
    "), o AS ("
    "  SELECT * FROM unnest($4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])"
    "    WITH ORDINALITY AS o(id, status, reply, code, mta, detail, n)"
    "), upd AS ("
    "  UPDATE queue_recipients r SET status = o.status, last_error = o.reply, status_code = o.code,"
    "    remote_mta = o.mta, attempts = r.attempts + 1, last_attempt = $3, updated_at = $3"
    "  FROM o WHERE r.id = o.id AND r.queue_id = $1 AND EXISTS (SELECT FROM held) RETURNING r.id, r.recipient"
    "), logged AS ("
    "  INSERT INTO delivery_log (at, message_id, queue_id, recipient, event, detail)"
    "  SELECT $3::timestamptz, held.message_id, $1, upd.recipient, o.status, o.detail"
    "  FROM held, upd JOIN o ON o.id = upd.id ORDER BY o.n"
    ") SELECT message_id FROM held"
)

# `record` for several entries' attempts with no DSN to send, as ONE statement (one round trip and one
# commit for all of them). Per entry ($2.. arrays in order): queue id, attempt time, next attempt, last
# error, counted; per outcome ($7.. arrays): queue id, recipient id, status, reply, status code, remote
# MTA, log detail. The fence (`held`) locks, in id order, the entries `$1` still holds; the rest of the
# statement touches only those. It sees the recipients as they were, so each one's status after this
# attempt is its outcome's, else its old one (`after`). An entry with none left to deliver goes, and its
# message unless something else points at it (the references `accounts.delete_unreferenced` checks; the
# entries being deleted are still visible here, hence `NOT IN gone`); the others are rescheduled and
# their leases released. Returns the ids of the entries that were held: only those were written.
_RECORD_MANY = (
    "WITH held AS (SELECT id, message_id FROM queue WHERE id = ANY($2::bigint[]) AND lease_owner = $1"
    "  ORDER BY id FOR UPDATE"
    "), e AS ("
    "  SELECT * FROM unnest($2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::boolean[])"
    "    AS e(qid, at, next_attempt, last_error, counted) WHERE e.qid IN (SELECT id FROM held)"
    "), o AS ("
    "  SELECT o.*, e.at FROM unnest($7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::text[],"
    "    $12::text[], $13::text[]) WITH ORDINALITY AS o(qid, id, status, reply, code, mta, detail, n)"
    "  JOIN e ON e.qid = o.qid"
    "), upd AS ("
    "  UPDATE queue_recipients r SET status = o.status, last_error = o.reply, status_code = o.code,"
    "    remote_mta = o.mta, attempts = r.attempts + 1, last_attempt = o.at, updated_at = o.at"
    "  FROM o WHERE r.id = o.id AND r.queue_id = o.qid RETURNING r.id, r.recipient"
    "), logged AS ("
    "  INSERT INTO delivery_log (at, message_id, queue_id, recipient, event, detail)"
    "  SELECT o.at, held.message_id, o.qid, upd.recipient, o.status, o.detail"
    "  FROM upd JOIN o ON o.id = upd.id JOIN held ON held.id = o.qid ORDER BY o.n"
    "), after AS ("
    "  SELECT e.qid, count(r.id) FILTER (WHERE COALESCE(o.status, r.status) IN ('pending', 'deferred'))"
    "    AS unfinished"
    "  FROM e LEFT JOIN queue_recipients r ON r.queue_id = e.qid LEFT JOIN o ON o.id = r.id GROUP BY e.qid"
    "), gone AS ("
    "  DELETE FROM queue q USING after WHERE q.id = after.qid AND after.unfinished = 0"
    "  RETURNING q.id, q.message_id"
    "), message_gone AS ("
    "  DELETE FROM messages m WHERE m.id IN (SELECT message_id FROM gone)"
    "  AND NOT EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.message_id = m.id)"
    "  AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = m.id AND q.id NOT IN (SELECT id FROM gone))"
    "  AND NOT EXISTS (SELECT 1 FROM sent_messages s WHERE s.message_id = m.id)"
    "), later AS ("
    "  UPDATE queue q SET next_attempt = e.next_attempt, lease_owner = NULL, lease_expires = NULL,"
    "  last_error = COALESCE(e.last_error, q.last_error), attempts = q.attempts - CASE WHEN e.counted THEN 0"
    "  ELSE 1 END FROM e JOIN after ON after.qid = e.qid WHERE q.id = e.qid AND after.unfinished > 0"
    ") SELECT id FROM held"
)


@dataclass(frozen=True)
class QueuedRecipient:
    """One recipient of a queue entry and what happened to it last."""

    id: int
    recipient: str
    domain: str
    status: str
    notify: str | None
    orcpt: str | None
    attempts: int
    last_error: str | None
    status_code: str | None
    remote_mta: str | None
    last_attempt: dt.datetime | None


@dataclass(frozen=True)
class QueueEntry:
    """A queue entry with its recipients (for a worker: only those still to deliver)."""

    id: int
    message_id: int
    sender: str
    account_id: int | None
    envid: str | None
    ret: str | None
    state: str
    created_at: dt.datetime
    next_attempt: dt.datetime
    attempts: int
    last_error: str | None
    lease_owner: str | None
    lease_expires: dt.datetime | None
    signed: bool
    signed_prefix: bytes | None
    delay_notified: bool
    recipients: list[QueuedRecipient]
    raw: bytes | None = field(default=None, repr=False, compare=False)  # the message, when claimed


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt for one recipient. `reply` is the remote's reply or our diagnosis."""

    recipient_id: int
    status: Status
    reply: str
    status_code: str
    remote_mta: str | None = None


# --- workers -------------------------------------------------------------------------------------------

async def claim(pool: asyncpg.Pool, owner: str, now: dt.datetime, lease_seconds: float,
                limit: int = 1, inline_max: int | None = None) -> list[QueueEntry]:
    """Lease up to `limit` due entries to `owner` (due: queued, next_attempt passed, no live lease), each
    with its message (`raw`) unless that is over `inline_max` bytes (a larger one is left to
    `message_bytes`, so that a batch of claims does not bring a batch of large messages into memory).

    An entry whose lease expired (its worker crashed or hung) is due again. The attempt counter goes up
    here, so an entry that kills its worker every time still backs off."""
    expires = now + dt.timedelta(seconds=lease_seconds)
    # One statement (one round trip, its own transaction): the lease and the unfinished recipients,
    # these as one array per column (r_<column>), in id order.
    rows = await pool.fetch(_CLAIM, owner, expires, now, limit, inline_max)
    return [_entry(row, [dict(zip(_RCPT_NAMES, values, strict=True))
                         for values in zip(*(row["r_" + c] or () for c in _RCPT_NAMES), strict=True)])
            for row in rows]


async def message_bytes(conn: Conn, message_id: int) -> bytes:
    """The stored raw message."""
    raw = await conn.fetchval("SELECT raw FROM messages WHERE id = $1", message_id)
    if raw is None:
        raise LookupError(f"message {message_id} is gone")
    return raw


async def save_signature(conn: Conn, queue_id: int, owner: str, prefix: bytes | None) -> bool:
    """Record that signing was done (with the header lines to prepend, or None: no key). Fenced."""
    status = await conn.execute(
        "UPDATE queue SET signed = true, signed_prefix = $3 WHERE id = $1 AND lease_owner = $2",
        queue_id, owner, prefix)
    return status == "UPDATE 1"


async def record(conn: asyncpg.Connection, queue_id: int, owner: str, outcomes: list[Outcome],
                 now: dt.datetime, next_attempt: dt.datetime, *, delay_notified: bool = False,
                 counted: bool = True) -> bool:
    """Write an attempt's per-recipient outcomes and reschedule or finish the entry, releasing the lease.

    Must run inside the caller's transaction (so DSNs can commit with it). Returns False, writing
    nothing, when `owner` no longer holds the lease: another worker has taken the entry over."""
    if outcomes:  # fence, outcomes and their log lines in one statement
        held = await conn.fetchval(
            _RECORD, queue_id, owner, now, [o.recipient_id for o in outcomes], [o.status for o in outcomes],
            [o.reply for o in outcomes], [o.status_code for o in outcomes], [o.remote_mta for o in outcomes],
            [_detail(o) for o in outcomes])
    else:
        held = await conn.fetchval("SELECT message_id FROM queue WHERE id = $1 AND lease_owner = $2 FOR UPDATE",
                                   queue_id, owner)
    if held is None:
        return False
    finished = await conn.fetchval(
        "DELETE FROM queue WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM queue_recipients"
        " WHERE queue_id = $1 AND status IN ('pending', 'deferred')) RETURNING id", queue_id)
    if finished is not None:
        await delete_unreferenced(conn, [held])
        return True
    last_error = next((o.reply for o in outcomes if o.status == "deferred"), None)
    # An attempt that reached no server (every destination behind an open breaker) does not count:
    # the claim raised `attempts`, and backoff must not grow while a breaker holds the mail.
    await conn.execute(
        "UPDATE queue SET next_attempt = $3, lease_owner = NULL, lease_expires = NULL,"
        " last_error = COALESCE($4, last_error), delay_notified = delay_notified OR $5,"
        " attempts = attempts - CASE WHEN $6 THEN 0 ELSE 1 END"
        " WHERE id = $1 AND lease_owner = $2", queue_id, owner, next_attempt, last_error, delay_notified,
        counted)
    return True


@dataclass(frozen=True)
class Attempt:
    """One entry's attempt to record: its outcomes (at least one) and when to try again."""

    queue_id: int
    outcomes: list[Outcome]
    at: dt.datetime
    next_attempt: dt.datetime
    counted: bool = True


async def record_many(pool: asyncpg.Pool, owner: str, attempts: list[Attempt]) -> set[int]:
    """`record` for attempts with outcomes and no DSN to send, of any number of entries, as ONE
    statement in its own transaction (one round trip and one commit for all). Returns the ids of the
    entries `owner` still held: the others, taken over by another worker, were left untouched."""
    outcomes = [(a.queue_id, o) for a in attempts for o in a.outcomes]
    rows = await pool.fetch(
        _RECORD_MANY, owner, [a.queue_id for a in attempts], [a.at for a in attempts],
        [a.next_attempt for a in attempts],
        [next((o.reply for o in a.outcomes if o.status == "deferred"), None) for a in attempts],
        [a.counted for a in attempts],
        [q for q, _ in outcomes], [o.recipient_id for _, o in outcomes], [o.status for _, o in outcomes],
        [o.reply for _, o in outcomes], [o.status_code for _, o in outcomes],
        [o.remote_mta for _, o in outcomes], [_detail(o) for _, o in outcomes])
    return {r["id"] for r in rows}


class Recorder:
    """Group commit for `record_many`: attempts that finish while a statement is in flight wait for it
    and then go together in the next one. Alone, an attempt is written at once (a batch of one); under
    load, one round trip and one commit serve every delivery that finished meanwhile, instead of a
    statement, a pool round trip and an fsync each."""

    def __init__(self, pool: asyncpg.Pool, owner: str) -> None:
        self.pool = pool
        self.owner = owner
        self._pending: list[tuple[Attempt, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, attempt: Attempt) -> bool:
        """Write `attempt` (in the next statement); True if the lease still held, so it was written."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((attempt, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="queue-recorder")
        return await asyncio.shield(future)

    async def idle(self) -> None:
        """Wait until every attempt handed over so far is written (or has failed): at shutdown, before
        the leases are released, so that no result is fenced out by our own release."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                held = await self._write([a for a, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved: its waiter may have been cancelled meanwhile
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                for attempt, future in batch:
                    if not future.done():
                        future.set_result(attempt.queue_id in held)

    async def _write(self, attempts: list[Attempt]) -> set[int]:
        try:
            return await record_many(self.pool, self.owner, attempts)
        except asyncpg.PostgresError as exc:
            if len(attempts) == 1:
                raise
            # e.g. a deadlock with an administrator's UPDATE of many rows: each alone, as before batching
            log.warning("batched queue record failed; recording one by one", extra={"error": repr(exc)})
        held: set[int] = set()
        for attempt in attempts:
            held |= await record_many(self.pool, self.owner, [attempt])
        return held


async def extend_leases(conn: Conn, queue_ids: list[int], owner: str, until: dt.datetime) -> int:
    """Push `owner`'s leases on these entries out to `until` (the heartbeat of every delivery a process
    has in flight, in one statement); returns how many it still held."""
    status = await conn.execute(
        "UPDATE queue SET lease_expires = $3 WHERE id = ANY($1::bigint[]) AND lease_owner = $2",
        queue_ids, owner, until)
    return int(status.split()[-1])


async def release(conn: Conn, owner: str, queue_ids: list[int] | None = None) -> int:
    """Give up `owner`'s leases (all, or those listed) so the entries are due again at once."""
    sql = "UPDATE queue SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = $1"
    args: list[object] = [owner]
    if queue_ids is not None:
        sql += " AND id = ANY($2::bigint[])"
        args.append(queue_ids)
    status = await conn.execute(sql, *args)
    return int(status.split()[-1])


def _detail(outcome: Outcome) -> str:
    where = f" ({outcome.remote_mta})" if outcome.remote_mta else ""
    return f"{outcome.status_code} {outcome.reply}{where}"


# --- administration ------------------------------------------------------------------------------------

async def list_entries(conn: Conn) -> list[QueueEntry]:
    """Every entry still in the queue (queued or held), oldest first, with its unfinished recipients."""
    rows = await conn.fetch(f"SELECT {_QUEUE_COLUMNS} FROM queue q WHERE q.state <> 'done' ORDER BY q.id")
    if not rows:
        return []
    rcpts = await conn.fetch(
        f"SELECT queue_id, {_RCPT_COLUMNS} FROM queue_recipients WHERE queue_id = ANY($1::bigint[])"
        " ORDER BY id", [r["id"] for r in rows])
    by_entry: dict[int, list[asyncpg.Record]] = {}
    for r in rcpts:
        by_entry.setdefault(r["queue_id"], []).append(r)
    return [_entry(row, by_entry.get(row["id"], [])) for row in rows]


async def get_entry(conn: Conn, queue_id: int) -> QueueEntry:
    """One entry with all its recipients; StoreError if there is none."""
    row = await conn.fetchrow(f"SELECT {_QUEUE_COLUMNS} FROM queue q WHERE q.id = $1", queue_id)
    if row is None:
        raise StoreError(f"no such queue entry: {queue_id}")
    rcpts = await conn.fetch(f"SELECT {_RCPT_COLUMNS} FROM queue_recipients WHERE queue_id = $1 ORDER BY id",
                             queue_id)
    return _entry(row, rcpts)


async def retry_now(conn: Conn, queue_id: int | None = None) -> int:
    """Make one queued entry (or, with None, every queued entry) due now; returns how many."""
    if queue_id is None:
        status = await conn.execute("UPDATE queue SET next_attempt = now() WHERE state = 'queued'")
    else:
        await get_entry(conn, queue_id)
        status = await conn.execute(
            "UPDATE queue SET next_attempt = now() WHERE id = $1 AND state = 'queued'", queue_id)
        if status == "UPDATE 0":
            raise StoreError(f"queue entry {queue_id} is held; release it instead")
    await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, str(queue_id or "all"))
    return int(status.split()[-1])


async def hold(conn: Conn, queue_id: int) -> None:
    """Stop delivery attempts for an entry until it is released (an attempt in flight still finishes)."""
    await get_entry(conn, queue_id)
    await conn.execute("UPDATE queue SET state = 'held' WHERE id = $1 AND state = 'queued'", queue_id)


async def release_held(conn: Conn, queue_id: int) -> None:
    """Put a held entry back in the queue, due now."""
    entry = await get_entry(conn, queue_id)
    if entry.state != "held":
        raise StoreError(f"queue entry {queue_id} is not held")
    await conn.execute("UPDATE queue SET state = 'queued', next_attempt = now() WHERE id = $1", queue_id)
    await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, str(queue_id))


async def delete(pool: asyncpg.Pool, queue_id: int) -> None:
    """Remove an entry without delivering or bouncing it; its message goes too if nothing else uses it."""
    async with pool.acquire() as conn, conn.transaction():
        message_id = await conn.fetchval("DELETE FROM queue WHERE id = $1 RETURNING message_id", queue_id)
        if message_id is None:
            raise StoreError(f"no such queue entry: {queue_id}")
        await conn.execute(
            "INSERT INTO delivery_log (message_id, queue_id, event, detail) VALUES ($1, $2, 'deleted',"
            " 'removed by the administrator')", message_id, queue_id)
        await delete_unreferenced(conn, [message_id])


def _entry(row: asyncpg.Record, rcpts: list[asyncpg.Record] | list[dict[str, object]]) -> QueueEntry:
    fields = {k: row[k] for k in QueueEntry.__dataclass_fields__ if k not in ("recipients", "raw")}
    return QueueEntry(**fields, raw=row.get("raw"), recipients=[
        QueuedRecipient(**{k: r[k] for k in QueuedRecipient.__dataclass_fields__}) for r in rcpts])
