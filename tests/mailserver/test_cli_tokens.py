"""`mailserver token create/list/revoke` as an admin runs them, and the token used over real HTTP."""

from __future__ import annotations

import httpx

from tests.api.conftest import start_api
from tests.mailserver.test_cli import run


async def test_token_lifecycle_with_the_api(db_dsn: str) -> None:
    assert run(db_dsn, "domain", "add", "example.test").returncode == 0
    assert run(db_dsn, "user", "add", "joe@example.test", stdin="secret-password\n").returncode == 0
    created = run(db_dsn, "token", "create", "joe@example.test", "--scope", "read,send", "--name", "ci")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("mst_") and "shown once" in created.stderr
    listing = run(db_dsn, "token", "list").stdout.splitlines()
    assert len(listing) == 1
    token_id, address, name, scopes, _, last_used, revoked = listing[0].split("\t")
    assert (address, name, scopes, last_used, revoked) == ("joe@example.test", "ci", "read,send", "never", "")
    assert secret not in run(db_dsn, "token", "list", "joe@example.test").stdout

    runtime, service = await start_api(db_dsn, seed=False)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}") as c:
            auth = {"Authorization": f"Bearer {secret}"}
            assert (await c.get("/v1/inbox", headers=auth)).status_code == 200
            assert "never" not in run(db_dsn, "token", "list").stdout
            assert run(db_dsn, "token", "revoke", token_id).returncode == 0
            assert (await c.get("/v1/inbox", headers=auth)).status_code == 401
    finally:
        await service.stop(1.0)
        await runtime.close()
    assert run(db_dsn, "token", "list").stdout.rstrip().endswith("revoked")


def test_token_refusals(db_dsn: str) -> None:
    assert run(db_dsn, "domain", "add", "example.test").returncode == 0
    assert run(db_dsn, "user", "add", "joe@example.test", stdin="secret-password\n").returncode == 0
    r = run(db_dsn, "token", "create", "joe@example.test", "--scope", "send,root")
    assert r.returncode == 1 and "scopes must be" in r.stderr
    r = run(db_dsn, "token", "create", "ghost@example.test", "--scope", "send")
    assert r.returncode == 1 and "no such account" in r.stderr
    assert run(db_dsn, "token", "revoke", "999").returncode == 1
    r = run(db_dsn, "token", "create", "joe@example.test", "--scope", "admin")
    assert r.returncode == 0
    assert run(db_dsn, "token", "revoke", "1").returncode == 0
    r = run(db_dsn, "token", "revoke", "1")
    assert r.returncode == 1 and "already revoked" in r.stderr
    assert run(db_dsn, "token", "create", "joe@example.test").returncode == 2  # --scope is required


def test_token_name_that_would_break_the_listing_is_refused(db_dsn: str) -> None:
    """A name with a newline or tab was stored, and `token list` then printed a broken line."""
    assert run(db_dsn, "domain", "add", "example.test").returncode == 0
    assert run(db_dsn, "user", "add", "joe@example.test", stdin="secret-password\n").returncode == 0
    for name in ("ci\n1\tfake@example.test", "a\tb", "bell\a"):
        r = run(db_dsn, "token", "create", "joe@example.test", "--scope", "send", "--name", name)
        assert r.returncode == 2 and "token --name" in r.stderr, r.stderr
    assert run(db_dsn, "token", "list").stdout == ""
