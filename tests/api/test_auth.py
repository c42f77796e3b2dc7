"""Authentication over real HTTP: bearer tokens with scopes, Basic, revocation, and the limits (429)."""

from __future__ import annotations

import base64

from storage import tokens
from tests.api.conftest import ALICE, BOB, PASSWORD, Api, ApiFactory

PROBLEM = "application/problem+json"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_no_or_bad_credentials_are_401_with_a_challenge(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer mst_nope"}, {"Authorization": "Bearer"},
                    {"Authorization": "Digest x"}, basic(ALICE, "wrong"), basic("ghost@example.test", "x"),
                    {"Authorization": "Basic !!!"}):
        r = await api.client.get("/v1/inbox", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == PROBLEM
        assert "Bearer" in r.headers["www-authenticate"] and "Basic" in r.headers["www-authenticate"]
        body = r.json()
        assert body["status"] == 401 and body["title"] == "Unauthorized" and "instance" in body


async def test_basic_auth_works_and_has_send_and_read(api: Api) -> None:
    r = await api.client.get("/v1/inbox", headers=basic(ALICE, PASSWORD))
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}
    r = await api.client.post("/v1/send", headers=basic(ALICE.upper(), PASSWORD),
                              json={"from": ALICE, "to": [BOB], "text": "hi"})
    assert r.status_code == 202
    r = await api.client.post("/v1/receive?to=" + BOB, headers={**basic(ALICE, PASSWORD),
                                                                 "Content-Type": "message/rfc822"}, content=b"x")
    assert r.status_code == 403


async def test_basic_auth_over_plain_http_is_refused_unless_allowed(api_factory: ApiFactory) -> None:
    api = await api_factory(http={"allow_plaintext_basic": False})
    r = await api.client.get("/v1/inbox", headers=basic(ALICE, PASSWORD))
    assert r.status_code == 401 and "HTTPS" in r.json()["detail"]
    assert (await api.client.get("/v1/inbox", headers=api.auth(api.alice))).status_code == 200


async def test_scopes_are_enforced_with_403(api: Api) -> None:
    r = await api.client.post("/v1/send", headers=api.auth(api.readonly),
                              json={"from": ALICE, "to": [BOB], "text": "hi"})
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/insufficient-scope")
    assert (await api.client.get("/v1/inbox", headers=api.auth(api.readonly))).status_code == 200
    assert (await api.client.get("/v1/inbox", headers=api.auth(api.admin))).status_code == 403
    r = await api.client.post(f"/v1/receive?to={BOB}", headers={**api.auth(api.alice),
                                                                 "Content-Type": "message/rfc822"},
                              content=b"Subject: x\r\n\r\nx\r\n")
    assert r.status_code == 403


async def test_revoked_token_and_disabled_account_stop_working(api: Api) -> None:
    assert (await api.client.get("/v1/inbox", headers=api.auth(api.alice))).status_code == 200
    (alice_token,) = [t for t in await tokens.list_tokens(api.pool, ALICE) if t.name == "alice"]
    await tokens.revoke_token(api.pool, alice_token.id)
    assert (await api.client.get("/v1/inbox", headers=api.auth(api.alice))).status_code == 401
    await api.pool.execute("UPDATE accounts SET disabled = true WHERE address = $1", BOB)
    assert (await api.client.get("/v1/inbox", headers=api.auth(api.bob))).status_code == 401
    assert (await api.client.get("/v1/inbox", headers=basic(BOB, PASSWORD))).status_code == 401


async def test_token_records_last_use(api: Api) -> None:
    await api.client.get("/v1/inbox", headers=api.auth(api.alice))
    (alice_token,) = [t for t in await tokens.list_tokens(api.pool, ALICE) if t.name == "alice"]
    assert alice_token.last_used is not None


async def test_failed_logins_are_limited_per_address_with_429(api_factory: ApiFactory) -> None:
    api = await api_factory(limits={"auth_failures": 3})
    codes = [(await api.client.get("/v1/inbox", headers=basic(ALICE, "guess"))).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    r = await api.client.get("/v1/inbox", headers=basic(ALICE, PASSWORD))  # even the right password now
    assert r.status_code == 429 and r.headers["content-type"] == PROBLEM
    assert 1 <= int(r.headers["retry-after"]) <= 600
    assert r.json()["limiter"] in ("auth-fail-ip", "auth-fail-account")
    metrics = (await api.client.get("/metrics")).text
    assert 'mailserver_auth_failures_total{protocol="http"} 3.0' in metrics
    assert 'mailserver_rate_limit_hits_total{limiter="auth-fail-ip"}' in metrics


async def test_requests_per_token_are_limited_with_429(api_factory: ApiFactory) -> None:
    api = await api_factory(http={"requests_per_minute": 3})
    codes = [(await api.client.get("/v1/inbox", headers=api.auth(api.alice))).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = await api.client.get("/v1/inbox", headers=api.auth(api.alice))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert (await api.client.get("/v1/inbox", headers=api.auth(api.readonly))).status_code == 200  # per token


async def test_malformed_basic_credentials_are_401_not_500(api: Api) -> None:
    """base64.b64decode raises a plain ValueError (not binascii.Error) for a str with non-ASCII
    characters, which a header with 8-bit bytes decodes to: that was a 500."""
    for value in (b"Basic \xff", b"Basic \xc3\xa9\xc3\xa9", b"Basic " + base64.b64encode(b"\xff:\xfe"),
                  b"Basic " + base64.b64encode(ALICE.encode())):
        r = await api.client.get("/v1/inbox", headers={"Authorization": value})
        assert r.status_code == 401, (value, r.status_code, r.text)
        assert r.headers["content-type"] == PROBLEM
