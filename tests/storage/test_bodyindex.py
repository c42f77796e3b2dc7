"""The full-text index (migration 0009, storage.bodyindex) and SEARCH over it (storage.mailsearch.search):
answers equal a plain reading of every message, indexed or not, whatever the needle."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from config.settings import SearchSettings
from mailcore.mime.precompute import summarize
from mailcore.mime.searchtext import fold, message_text
from storage import bodyindex, mailsearch, mailstore
from tests.storage import scan
from tests.storage.textcorpus import CORPUS, deliver

NEEDLES = ["zephyrquill", "ZEPHYRQUILL", "zephyr", "quill", "ephyrqui", "keep the zephyrquill notes",
           "the zephyrquill", "quill notes", "100% sure", "100%", "%", "_", "sure_th", "a_b", "café", "CAFÉ",
           "strasse", "straße", "grüße aus köln", "köln", "soft break", "figures", "quarterly figures",
           "<b>quarterly</b>", "iVBORw0KGgo", "zephyrquillsuffix", "xxxzephyr", "beforeafter", "e", "th",
           "", "the", " ", "notes.\r\nsecond", "nothing like this", "zzzzz", "au lait", "lait\r\n",
           # words of one and two letters are not indexed: needles having them are answered all the same
           "au", " au ", "ait", "a_b c", "c ", "100", " 100% ", "is", "is here", "the f"]


def expected(needle: str) -> list[int]:
    """UIDs whose decoded text contains the needle, read in Python from each message."""
    out = []
    for uid, raw in enumerate(CORPUS, 1):
        s = summarize(raw)
        if fold(needle) in message_text(raw, s.parts, s.body_offset, 1 << 20).text:
            out.append(uid)
    return out


async def test_indexed_search_finds_exactly_the_decoded_matches(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    assert await bodyindex.index_all(pool) == len(CORPUS)
    some = 0
    for needle in NEEDLES:
        want = expected(needle)
        body = mailsearch.Contains("body", needle)
        assert await mailsearch.search(pool, text_box[1], body) == want, needle
        everything = list(range(1, len(CORPUS) + 1))
        assert await mailsearch.search(pool, text_box[1], mailsearch.Negate(body)) == \
            [u for u in everything if u not in want], needle
        both = mailsearch.AnyOf((body, mailsearch.Contains("subject", "plain")))
        assert await mailsearch.search(pool, text_box[1], both) == sorted(set(want) | {1}), needle
        some += len(want)
    assert some > 40


@pytest.mark.parametrize("needle,uids", [
    ("zephyrquill", [1, 2, 3, 7]),  # plain, quoted-printable across a soft break, base64; inside a long word
    ("köln", [3]),
    ("iVBORw0KGgo", []),  # an image's base64 is no text: no false positive
    ("zephyrquillsuffix", [7]),
])
async def test_decoded_matches(pool: asyncpg.Pool, text_box: tuple[int, int], needle: str, uids: list[int]) -> None:
    await bodyindex.index_all(pool)
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", needle)) == uids


async def test_text_matches_header_or_body(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    await bodyindex.index_all(pool)
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("text", "köln")) == [3]
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("text", "subject: alternative")) == [6]
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("text", "Subject")) == list(range(1, 10))


async def test_unindexed_messages_are_searched_in_their_raw_bytes(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    for needle in ["zephyrquill", "ZEPHYR=\r\nQUILL", "iVBORw0KGgo", "caf", "100%", ""]:
        plain = await scan.uids(pool, text_box[1], mailsearch.Contains("body", needle))
        assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", needle)) == plain, needle
    # indexed and not at once: messages delivered after the indexer ran are read raw
    await bodyindex.index_all(pool)
    await deliver(pool, text_box[0], b"Subject: late\r\n\r\nlate zephyrquill\r\n")
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "zephyrquill")) == [1, 2, 3, 7, 10]
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "ZEPHYR=")) == []  # decoded now


async def test_a_text_cut_at_the_limit_is_also_read_raw(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    await deliver(pool, text_box[0], b"Subject: long\r\n\r\n" + b"filler words " * 100 + b"needleword at the end\r\n")
    await bodyindex.index_all(pool, max_text=200)
    row = await pool.fetchrow("SELECT complete, length(text) AS n FROM message_texts ORDER BY message_id DESC LIMIT 1")
    assert not row["complete"] and row["n"] == 200
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "needleword")) == [10]
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "filler words")) == [10]


async def test_words_narrow_and_long_words_do_not(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    await bodyindex.index_all(pool)
    assert await pool.fetchval("SELECT words IS NULL FROM message_texts t JOIN mailbox_messages mm"
                               " ON mm.message_id = t.message_id WHERE mm.uid = 7")
    indexes = await mailsearch.available_indexes(pool)
    assert {"texts", "words_trgm"} <= indexes
    narrowed = await mailsearch.narrowing(pool, mailsearch.Contains("body", "Quill notes"), indexes)
    sets = narrowed["quill notes"]
    assert sets is not None
    candidates = await pool.fetch("SELECT mm.uid FROM message_texts_with($1, $2, $3) AS m(id)"
                                  " JOIN mailbox_messages mm ON mm.message_id = m.id ORDER BY 1", *sets)
    assert [r["uid"] for r in candidates] == [1]  # words ending in "quill" and starting with "notes"
    assert (await mailsearch.narrowing(pool, mailsearch.Contains("body", "-%-"), indexes))["-%-"] is None
    # a short whole word would select most of the database: not used; a longer one is
    assert (await mailsearch.narrowing(pool, mailsearch.Contains("body", " the "), indexes))[" the "] is None
    assert (await mailsearch.narrowing(pool, mailsearch.Contains("body", " keep "), indexes))[" keep "] is not None


async def test_expunged_messages_leave_the_index(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    await bodyindex.index_all(pool)
    assert await pool.fetchval("SELECT count(*) FROM message_texts") == len(CORPUS)
    await mailstore.store_flags(pool, text_box[1], [1, 2], "add", [mailstore.DELETED])
    assert await mailstore.expunge(pool, text_box[1]) == [1, 2]
    assert await pool.fetchval("SELECT count(*) FROM message_texts") == len(CORPUS) - 2
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "zephyrquill")) == [3, 7]


async def test_the_indexer_survives_malformed_messages(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    bad = [b"\xff\xfe\x00garbage without a header", b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
           b"Content-Transfer-Encoding: base64\r\nContent-Type: text/plain; charset=utf-7\r\n\r\nK2Q4M2QtJC0=\r\n"]
    for raw in bad:
        await deliver(pool, text_box[0], raw)
    # a part list that lies (stored by an older or buggy summarizer)
    await pool.execute("UPDATE messages SET parts = '[{\"content_type\": \"text/plain\", \"body_start\": 5,"
                       " \"body_end\": 999999, \"encoding\": \"quoted-printable\", \"charset\": 7}]'"
                       " WHERE id = (SELECT max(id) FROM messages)")
    await pool.execute("UPDATE messages SET parts = '{\"not\": \"a list\"}' WHERE id = (SELECT min(id) FROM messages)")
    await deliver(pool, text_box[0], b"Subject: after\r\n\r\nthe last zephyrquill\r\n")
    assert await bodyindex.index_all(pool) == len(CORPUS) + len(bad) + 1
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "zephyrquill")) == [1, 2, 3, 7, 13]


async def test_two_indexers_share_the_work(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    for i in range(150):
        await deliver(pool, text_box[0], b"Subject: more\r\n\r\nmessage number %d\r\n" % i)
    counts = await asyncio.gather(*(bodyindex.index_all(pool, batch=7) for _ in range(3)))
    assert sum(counts) == len(CORPUS) + 150  # each message indexed once, by one of them
    assert await pool.fetchval("SELECT count(*) FROM message_texts") == len(CORPUS) + 150
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "number 149")) == [159]


async def test_the_indexer_service_indexes_new_mail(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    service = bodyindex.TextIndexer(pool, SearchSettings(poll_interval=0.05, batch=4))
    await service.start()
    try:
        await deliver(pool, text_box[0], b"Subject: new\r\n\r\nfresh zephyrquill\r\n")
        for _ in range(600):  # up to 30 s: the poll is 0.05 s
            if await pool.fetchval("SELECT count(*) FROM message_texts") == len(CORPUS) + 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await service.stop(1)
    assert service.indexed == len(CORPUS) + 1
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "fresh zephyr")) == [10]


# (looks as (highest id, time), then whether each is due) for max_defer = 10
PACING = [
    ("the first look indexes", [(5, 0.0)], [True]),
    ("no new mail: index", [(5, 0.0), (5, 1.0), (5, 2.0)], [True, True, True]),
    ("mail arriving: wait", [(5, 0.0), (9, 1.0), (14, 2.0)], [True, False, False]),
    ("a quiet look after a burst indexes", [(5, 0.0), (9, 1.0), (14, 2.0), (14, 3.0)], [True, False, False, True]),
    ("steady inflow: index once max_defer has passed, then wait again",
     [(5, 0.0), (9, 1.0), (14, 6.0), (20, 11.0), (25, 12.0), (30, 21.0), (35, 22.0)], [True, False, False, True, False, False, True]),
    ("an expunge of the newest message counts as a change", [(5, 0.0), (4, 1.0), (4, 2.0)], [True, False, True]),
]


@pytest.mark.parametrize(("looks", "due"), [pytest.param(looks, due, id=name) for name, looks, due in PACING])
def test_pacing(looks: list[tuple[int, float]], due: list[bool]) -> None:
    pacing = bodyindex.Pacing(10.0)
    assert [pacing.due(top, now) for top, now in looks] == due


def test_pacing_zero_indexes_at_every_look() -> None:
    pacing = bodyindex.Pacing(0)
    assert [pacing.due(top, float(top)) for top in (1, 2, 3, 4)] == [True] * 4


async def test_the_service_indexes_a_burst_once_mail_stops(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    """A look that finds new mail leaves it for later; the next look that finds none indexes it all."""
    service = bodyindex.TextIndexer(pool, SearchSettings(max_defer=3600))
    count = "SELECT count(*) FROM message_texts"
    try:
        assert await service.look()  # the first look: the corpus
        assert await pool.fetchval(count) == len(CORPUS)
        await deliver(pool, text_box[0], b"Subject: burst\r\n\r\nfirst of a burst\r\n")
        assert not await service.look()
        await deliver(pool, text_box[0], b"Subject: burst\r\n\r\nsecond of a burst\r\n")
        assert not await service.look()
        assert await pool.fetchval(count) == len(CORPUS)  # deferred, and SEARCH still finds them raw
        assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "of a burst")) == [10, 11]
        assert await service.look()  # nothing new since: index
        assert await pool.fetchval(count) == len(CORPUS) + 2
    finally:
        await service.stop(0)


async def test_the_service_indexes_under_steady_inflow(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    """Mail at every look does not hold the index back longer than max_defer."""
    service = bodyindex.TextIndexer(pool, SearchSettings(max_defer=0.2))
    try:
        assert await service.look()
        await deliver(pool, text_box[0], b"Subject: steady\r\n\r\none\r\n")
        assert not await service.look()
        await asyncio.sleep(0.25)
        await deliver(pool, text_box[0], b"Subject: steady\r\n\r\ntwo\r\n")
        assert await service.look()
        assert await pool.fetchval("SELECT count(*) FROM message_texts") == len(CORPUS) + 2
    finally:
        await service.stop(0)


async def test_a_claim_reads_only_the_ids_above_its_floor(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    """Each batch looks for texts in its range of ids only, in the generic plan of the prepared statement
    too: one that reads the whole of message_texts costs every batch time growing with the database
    (0.32 ms of PostgreSQL a message at 60,000 indexed messages, 0.07 without)."""
    await pool.execute(
        "INSERT INTO message_texts (message_id, text, words, complete)"
        " SELECT id, 'x', '{}', true FROM messages")
    await pool.execute(  # a large indexed store, as the planner will see it
        "INSERT INTO messages (raw, size, header, body_offset)"
        " SELECT '', 0, '', 0 FROM generate_series(1, 20000) AS g")
    await pool.execute("INSERT INTO message_texts (message_id, text, words, complete)"
                       " SELECT id, 'x', '{}', true FROM messages WHERE size = 0")
    await pool.execute("ANALYZE messages; ANALYZE message_texts")
    top = await pool.fetchval("SELECT max(id) FROM messages")
    async with pool.acquire() as conn, conn.transaction():
        # the plan a prepared statement settles on after a few runs: made for any floor, not this one
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE claim(bigint, integer) AS {bodyindex._CLAIM}")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN ANALYZE EXECUTE claim({top - 100}, 200)"))
        await conn.execute("DEALLOCATE claim")
    assert "Seq Scan" not in plan, plan


async def test_short_words_are_not_indexed(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    await bodyindex.index_all(pool)
    assert await pool.fetchval("SELECT count(*) FROM search_words WHERE length(word) < 3") == 0
    assert await pool.fetchval("SELECT count(*) FROM search_words WHERE word IN ('lait', 'the', 'a_b')") == 3
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "au lait")) == [4]


async def test_the_word_cache_stays_right_beside_another_instance(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    """Each instance remembers the words it added; one another instance added is sent again and costs a
    look-up, never a second row; a batch that fails remembers nothing, so its words are sent again."""
    ours, theirs = set[bytes](), set[bytes]()
    await bodyindex.index_batch(pool, known=ours)
    assert b"zephyrquill" in ours and b"au" not in ours
    await deliver(pool, text_box[0], b"Subject: theirs\r\n\r\nquillfeather zephyrquill\r\n")
    await bodyindex.index_batch(pool, after=len(CORPUS), known=theirs)  # another instance adds a word
    assert b"quillfeather" in theirs and b"quillfeather" not in ours
    await pool.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
                       " $$ BEGIN RAISE EXCEPTION 'refused'; END $$;"
                       " CREATE TRIGGER refuse BEFORE INSERT ON message_texts FOR EACH ROW EXECUTE FUNCTION refuse()")
    await deliver(pool, text_box[0], b"Subject: ours\r\n\r\nquillfeather inkwellquill\r\n")
    with pytest.raises(asyncpg.RaiseError):
        await bodyindex.index_batch(pool, after=len(CORPUS) + 1, known=ours)
    assert b"inkwellquill" not in ours  # rolled back: not remembered
    assert await pool.fetchval("SELECT count(*) FROM search_words WHERE word = 'inkwellquill'") == 0
    await pool.execute("DROP TRIGGER refuse ON message_texts")
    assert (await bodyindex.index_batch(pool, after=len(CORPUS) + 1, known=ours))[1] == 1
    assert {b"quillfeather", b"inkwellquill"} <= ours
    rows = await pool.fetch("SELECT word, count(*) AS n FROM search_words WHERE word LIKE '%quill%' GROUP BY word")
    assert {r["word"]: r["n"] for r in rows} == {"zephyrquill": 1, "quillfeather": 1, "inkwellquill": 1}
    # part-word needles find them through the vocabulary, whichever instance added the word
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "llfeath")) == [10, 11]
    assert await mailsearch.search(pool, text_box[1], mailsearch.Contains("body", "kwellqu")) == [11]


async def test_pending_lists_are_merged_once_mail_stops(pool: asyncpg.Pool, text_box: tuple[int, int]) -> None:
    """A pass that finds nothing new after one that stored texts merges the GIN pending lists, the header
    SEARCH index's included: a SEARCH then reads no list linearly, and no delivery pays the merge."""
    await pool.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    heads = mailsearch.INDEX_NAMES["fields"]
    indexes = [n for n in ("message_texts_words", "search_words_trgm", heads)
               if await pool.fetchval("SELECT to_regclass($1)", n) is not None]
    assert heads in indexes  # pg_trgm is there, as in production

    async def pending() -> dict[str, int]:
        return {n: await pool.fetchval("SELECT pending_tuples FROM pgstatginindex($1::regclass)", n) for n in indexes}

    service = bodyindex.TextIndexer(pool, SearchSettings())
    try:
        await service.index_pending()  # stores the corpus' texts
        assert (await pending())[heads] > 0  # the deliveries' trigrams wait in the list
        await service.index_pending()  # nothing new: mail has stopped
    finally:
        await service.stop(0)
    assert await pending() == dict.fromkeys(indexes, 0)
