"""The whole server as a user meets it: one `mailserver serve` process, real clients on every protocol.

A program sends through the HTTP API; a person reads over IMAP; a remote domain (a sink on loopback)
receives what was queued, and the API's status follows the queue to the end.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path

import asyncpg
import httpx
from imapclient import IMAPClient

from mailcore.passwords import hash_password_sync
from storage import accounts, tokens
from tests.server_process import ServerProcess
from tests.sinks import Sink

PASSWORD = "correct horse battery"


async def _setup(pool: asyncpg.Pool) -> str:
    await accounts.add_domain(pool, "e2e.example")
    for user in ("alice@e2e.example", "bob@e2e.example"):
        await accounts.add_account(pool, user, hash_password_sync(PASSWORD))
    _, secret = await tokens.create_token(pool, "alice@e2e.example", ["send", "read"], "e2e")
    return secret


def _imap_fetch_subjects(port: int) -> list[tuple[str, bytes]]:
    with IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10) as client:
        client.login("bob@e2e.example", PASSWORD)
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        data = client.fetch(uids, ["ENVELOPE", "BODY.PEEK[]"])
        return [(data[u][b"ENVELOPE"].subject.decode(), data[u][b"BODY[]"]) for u in uids]


async def test_api_send_read_over_imap_and_remote_status_follows_the_queue(
        pool: asyncpg.Pool, db_dsn: str, tmp_path: Path) -> None:
    token = await _setup(pool)
    sink = await Sink().start()
    server = ServerProcess(db_dsn, tmp_path, listeners=["http.listener", "imap.imap", "smtp.mx"], env={
        "MAILSERVER_HTTP__TLS": "false",
        "MAILSERVER_IMAP__ALLOW_PLAINTEXT_AUTH": "true",
        "MAILSERVER_QUEUE__POLL_INTERVAL": "0.2",
        "MAILSERVER_QUEUE__TRANSPORTS": f'{{"far.example" = "smtp://127.0.0.1:{sink.port}"}}',
    })
    await server.start()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.ports['http.listener']}",
                                     timeout=10) as http:
            r = await http.post("/v1/send", headers=headers, json={
                "from": "alice@e2e.example", "to": ["bob@e2e.example", "carol@far.example"],
                "subject": "end to end", "text": "through every door"})
            assert r.status_code == 202, r.text
            sent = r.json()

            # Bob reads it with a real IMAP client.
            got = await asyncio.to_thread(_imap_fetch_subjects, server.ports["imap.imap"])
            assert [s for s, _ in got] == ["end to end"]
            body = email.message_from_bytes(got[0][1], policy=email.policy.default)
            assert body["Delivered-To"] == "bob@e2e.example"
            assert body.get_content().strip() == "through every door"

            # Carol's copy leaves through the queue; the status moves from queued to delivered.
            async with asyncio.timeout(20):
                while True:
                    status = (await http.get(sent["status_url"], headers=headers)).json()
                    carol = {s["recipient"]: s for s in status["recipients"]}["carol@far.example"]
                    if carol["status"] == "delivered":
                        break
                    assert carol["status"] in ("queued", "deferred"), carol
                    await asyncio.sleep(0.1)
            assert sink.recipients == ["carol@far.example"]
            assert b"through every door" in sink.received[0].data
            # The finished entry has left the queue, yet the message and its outcome stay readable.
            assert await pool.fetchval("SELECT count(*) FROM queue") == 0
            r = await http.get(f"/v1/messages/{sent['id']}", headers=headers)
            assert r.status_code == 200 and r.json()["subject"] == "end to end"
    finally:
        code = await server.stop()
        await sink.stop()
    assert code == 0, server.log_tail()
