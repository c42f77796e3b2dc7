"""Domains, accounts and aliases, and the one place that decides where a recipient's mail goes.

Owns: the rows of `domains`, `accounts`, `aliases`, the default mailboxes created with an account, and
recipient routing (exact account, alias with several local or remote targets, plus-addressing,
catch-all, postmaster). It takes addresses already parsed by `mailcore.address` and never hashes
passwords itself (callers pass a hash from `mailcore.passwords`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from mailcore.address import Address, AddressError, normalize_domain, parse_address

# The mailboxes every account starts with, and their RFC 6154 special-use attributes.
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)

MAX_ALIAS_DEPTH = 5

Conn = asyncpg.Connection | asyncpg.Pool


class StoreError(Exception):
    """A refused operation (unknown domain, duplicate account, ...); the text is for the admin."""


@dataclass(frozen=True)
class Account:
    """One mail account as the store knows it."""

    id: int
    address: str
    password_hash: str
    quota_bytes: int | None
    used_bytes: int
    disabled: bool


@dataclass
class Route:
    """Where mail for one envelope recipient goes: local accounts (with the address that reached them)
    and remote addresses to queue. Empty means no such recipient."""

    local: list[tuple[int, str]] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.local or self.remote)


# --- domains -------------------------------------------------------------------------------------------

async def add_domain(conn: Conn, name: str) -> int:
    """Add a hosted domain; refuse a duplicate."""
    domain = _domain(name)
    try:
        return await conn.fetchval("INSERT INTO domains (name) VALUES ($1) RETURNING id", domain)
    except asyncpg.UniqueViolationError:
        raise StoreError(f"domain {domain} already exists") from None


async def list_domains(conn: Conn) -> list[str]:
    """Every hosted domain, sorted."""
    return [r["name"] for r in await conn.fetch("SELECT name FROM domains ORDER BY name")]


async def remove_domain(conn: Conn, name: str) -> None:
    """Remove a domain that no longer has accounts or aliases."""
    domain = _domain(name)
    try:
        status = await conn.execute("DELETE FROM domains WHERE name = $1", domain)
    except (asyncpg.ForeignKeyViolationError, asyncpg.RestrictViolationError):  # PG 18 reports RESTRICT so
        raise StoreError(f"domain {domain} still has accounts or aliases; remove them first") from None
    if status == "DELETE 0":
        raise StoreError(f"no such domain: {domain}")


async def is_local_domain(conn: Conn, domain: str) -> bool:
    """Whether we host `domain` (already normalised)."""
    return bool(await conn.fetchval("SELECT 1 FROM domains WHERE name = $1", domain))


async def _domain_id(conn: Conn, domain: str) -> int:
    domain_id = await conn.fetchval("SELECT id FROM domains WHERE name = $1", domain)
    if domain_id is None:
        raise StoreError(f"unknown domain: {domain} (add it with 'mailserver domain add {domain}')")
    return domain_id


def _domain(name: str) -> str:
    try:
        return normalize_domain(name)
    except AddressError as exc:
        raise StoreError(f"invalid domain {name!r}: {exc}") from None


def _address(text: str) -> Address:
    try:
        return parse_address(text.strip())
    except AddressError as exc:
        raise StoreError(f"invalid address {text!r}: {exc}") from None


# --- accounts ------------------------------------------------------------------------------------------

async def add_account(pool: asyncpg.Pool, address: str, password_hash: str,
                      quota_bytes: int | None = None) -> int:
    """Create an account and its default mailboxes in one transaction."""
    addr = _address(address)
    async with pool.acquire() as conn, conn.transaction():
        domain_id = await _domain_id(conn, addr.domain)
        if await conn.fetchval("SELECT 1 FROM aliases WHERE source = $1", addr.key):
            raise StoreError(f"{addr.key} is already an alias")
        try:
            account_id = await conn.fetchval(
                "INSERT INTO accounts (domain_id, address, password_hash, quota_bytes)"
                " VALUES ($1, $2, $3, $4) RETURNING id",
                domain_id, addr.key, password_hash, quota_bytes,
            )
        except asyncpg.UniqueViolationError:
            raise StoreError(f"account {addr.key} already exists") from None
        await conn.executemany(
            "INSERT INTO mailboxes (account_id, name, special_use) VALUES ($1, $2, $3)",
            [(account_id, name, use) for name, use in DEFAULT_MAILBOXES],
        )
    return account_id


async def get_account(conn: Conn, address: str) -> Account | None:
    """Look an account up by address (case-insensitive); None if absent or unparsable."""
    try:
        key = parse_address(address.strip()).key
    except AddressError:
        return None
    row = await conn.fetchrow(
        "SELECT id, address, password_hash, quota_bytes, used_bytes, disabled FROM accounts"
        " WHERE address = $1", key)
    return Account(**dict(row)) if row else None


async def list_accounts(conn: Conn, domain: str | None = None) -> list[Account]:
    """Accounts, optionally of one domain, sorted by address."""
    sql = ("SELECT a.id, a.address, a.password_hash, a.quota_bytes, a.used_bytes, a.disabled"
           " FROM accounts a JOIN domains d ON d.id = a.domain_id")
    args: list[object] = []
    if domain:
        sql += " WHERE d.name = $1"
        args.append(_domain(domain))
    rows = await conn.fetch(sql + " ORDER BY a.address", *args)
    return [Account(**dict(r)) for r in rows]


async def set_password(conn: Conn, address: str, password_hash: str) -> None:
    """Replace an account's password hash."""
    status = await conn.execute("UPDATE accounts SET password_hash = $2 WHERE address = $1",
                                _address(address).key, password_hash)
    if status == "UPDATE 0":
        raise StoreError(f"no such account: {address}")


async def set_quota(conn: Conn, address: str, quota_bytes: int | None) -> None:
    """Set (or with None, lift) an account's storage quota."""
    if quota_bytes is not None and quota_bytes < 0:
        raise StoreError("quota must be 0 or more")
    status = await conn.execute("UPDATE accounts SET quota_bytes = $2 WHERE address = $1",
                                _address(address).key, quota_bytes)
    if status == "UPDATE 0":
        raise StoreError(f"no such account: {address}")


async def remove_account(pool: asyncpg.Pool, address: str) -> None:
    """Delete an account with its mailboxes; messages no longer referenced are removed too."""
    key = _address(address).key
    async with pool.acquire() as conn, conn.transaction():
        account_id = await conn.fetchval("SELECT id FROM accounts WHERE address = $1 FOR UPDATE", key)
        if account_id is None:
            raise StoreError(f"no such account: {address}")
        msg_ids = await conn.fetch(
            "SELECT DISTINCT mm.message_id FROM mailbox_messages mm JOIN mailboxes m ON m.id = mm.mailbox_id"
            " WHERE m.account_id = $1 UNION SELECT message_id FROM sent_messages WHERE account_id = $1",
            account_id)
        await conn.execute("DELETE FROM accounts WHERE id = $1", account_id)
        await delete_unreferenced(conn, [r["message_id"] for r in msg_ids])


async def delete_unreferenced(conn: asyncpg.Connection, message_ids: list[int]) -> int:
    """Delete those of `message_ids` that no mailbox entry, queue entry or sent record points at any more.

    A sent record (the API's /v1/sent) keeps a message whose remote delivery has finished readable,
    with its final per-recipient status, until the sender's account is removed."""
    if not message_ids:
        return 0
    status = await conn.execute(
        "DELETE FROM messages m WHERE m.id = ANY($1::bigint[])"
        " AND NOT EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.message_id = m.id)"
        " AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.message_id = m.id)"
        " AND NOT EXISTS (SELECT 1 FROM sent_messages s WHERE s.message_id = m.id)", message_ids)
    return int(status.split()[-1])


# --- aliases -------------------------------------------------------------------------------------------

async def add_alias(pool: asyncpg.Pool, source: str, targets: list[str]) -> None:
    """Add an alias (`user@domain`, or `@domain` for a catch-all) to one or more targets."""
    if not targets:
        raise StoreError("an alias needs at least one target")
    src = source.strip().lower()
    if src.startswith("@"):
        domain = _domain(src[1:])
        src = "@" + domain
    else:
        addr = _address(src)
        src, domain = addr.key, addr.domain
    clean_targets = [str(_address(t)) for t in targets]
    async with pool.acquire() as conn, conn.transaction():
        domain_id = await _domain_id(conn, domain)
        if not src.startswith("@") and await conn.fetchval("SELECT 1 FROM accounts WHERE address = $1", src):
            raise StoreError(f"{src} is an account; an alias cannot shadow it")
        for target in clean_targets:
            try:
                await conn.execute("INSERT INTO aliases (domain_id, source, target) VALUES ($1, $2, $3)",
                                   domain_id, src, target)
            except asyncpg.UniqueViolationError:
                raise StoreError(f"alias {src} -> {target} already exists") from None


async def list_aliases(conn: Conn, domain: str | None = None) -> list[tuple[str, str]]:
    """(source, target) pairs, sorted."""
    if domain:
        rows = await conn.fetch(
            "SELECT a.source, a.target FROM aliases a JOIN domains d ON d.id = a.domain_id"
            " WHERE d.name = $1 ORDER BY 1, 2", _domain(domain))
    else:
        rows = await conn.fetch("SELECT source, target FROM aliases ORDER BY 1, 2")
    return [(r["source"], r["target"]) for r in rows]


async def remove_alias(conn: Conn, source: str, target: str | None = None) -> None:
    """Remove an alias entirely, or only one of its targets."""
    src = source.strip().lower()
    if target is None:
        status = await conn.execute("DELETE FROM aliases WHERE source = $1", src)
    else:
        status = await conn.execute("DELETE FROM aliases WHERE source = $1 AND lower(target) = lower($2)",
                                    src, target.strip())
    if status == "DELETE 0":
        raise StoreError(f"no such alias: {source}" + (f" -> {target}" if target else ""))


# --- routing -------------------------------------------------------------------------------------------

async def resolve_recipient(conn: Conn, address: Address, postmaster: str | None = None) -> Route:
    """Decide where mail to `address` (at one of our domains) goes. Empty route: unknown recipient.

    Order: postmaster (RFC 5321 §4.5.1), exact account, exact alias, the same two without a +tag,
    then the domain's catch-all. Alias targets that are local are followed (up to a depth limit);
    other targets are remote.
    """
    route = Route()
    if address.local.lower() == "postmaster" and postmaster:
        pm = await get_account(conn, postmaster)
        if pm is not None:
            route.local.append((pm.id, address.key))
            return route
    candidates = [address.key]
    if address.base_key != address.key:
        candidates.append(address.base_key)
    candidates.append("@" + address.domain)
    for key in candidates:
        await _expand(conn, key, address.key, route, set(), 0)
        if route:
            return route
    return route


async def _expand(conn: Conn, key: str, reached_as: str, route: Route, seen: set[str], depth: int) -> None:
    if key in seen or depth > MAX_ALIAS_DEPTH:
        return
    seen.add(key)
    if not key.startswith("@"):
        account_id = await conn.fetchval("SELECT id FROM accounts WHERE address = $1 AND NOT disabled", key)
        if account_id is not None:
            if all(existing != account_id for existing, _ in route.local):
                route.local.append((account_id, reached_as))
            return
    targets = await conn.fetch(
        "SELECT a.target, d.name IS NOT NULL AS local FROM aliases a"
        " LEFT JOIN domains d ON d.name = lower(split_part(a.target, '@', 2))"
        " WHERE a.source = $1 ORDER BY a.id", key)
    for row in targets:
        target = row["target"]
        if row["local"]:
            try:
                taddr = parse_address(target)
            except AddressError:
                continue
            before = len(route.local) + len(route.remote)
            await _expand(conn, taddr.key, reached_as, route, seen, depth + 1)
            if len(route.local) + len(route.remote) == before and taddr.base_key != taddr.key:
                await _expand(conn, taddr.base_key, reached_as, route, seen, depth + 1)
        elif target not in route.remote:
            route.remote.append(target)


@dataclass(frozen=True)
class Routing:
    """What the tables say about one recipient address: whether its domain is ours and, if so, the local
    accounts (with the address that reached them) and remote addresses its mail goes to; neither means no
    such recipient. `quota_ids` are those local accounts that have a quota: how full they are changes
    with every delivery, so it is never part of the answer and is asked again each time (`accounts_over_quota`).
    Immutable, since `storage.routecache` hands the same answer to every RCPT for that address."""

    ours: bool
    local: tuple[tuple[int, str], ...] = ()
    remote: tuple[str, ...] = ()
    quota_ids: tuple[int, ...] = ()


async def route_address(conn: Conn, address: Address, incoming: int = 0) -> tuple[Routing, list[int]]:
    """Route `address` (any local part but postmaster, which depends on the configuration) and say which
    of its local accounts are full or would be by `incoming` more bytes.

    The usual RCPT (an existing account at one of our domains, or a domain not ours) costs one round trip:
    an exact account is what `resolve_recipient` picks first; only aliases, +tags and catch-alls take the
    general path, and one more query for their accounts' quotas."""
    row = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM domains WHERE name = $1) AS local, a.id, a.quota_bytes,"
        " COALESCE(a.used_bytes >= a.quota_bytes OR a.used_bytes + $3 > a.quota_bytes, false) AS full"
        " FROM (SELECT 1) AS one LEFT JOIN accounts a ON a.address = $2 AND NOT a.disabled",
        address.domain, address.key, incoming)
    if not row["local"]:
        return Routing(ours=False), []
    account_id = row["id"]
    if account_id is not None:
        quota_ids = (account_id,) if row["quota_bytes"] is not None else ()
        return Routing(True, ((account_id, address.key),), quota_ids=quota_ids), [account_id] if row["full"] else []
    route = await resolve_recipient(conn, address)
    if not route.local:
        return Routing(True, remote=tuple(route.remote)), []
    rows = await conn.fetch(
        "SELECT id, used_bytes >= quota_bytes OR used_bytes + $2 > quota_bytes AS full FROM accounts"
        " WHERE id = ANY($1::bigint[]) AND quota_bytes IS NOT NULL", [a for a, _ in route.local], incoming)
    routing = Routing(True, tuple(route.local), tuple(route.remote), tuple(r["id"] for r in rows))
    return routing, [r["id"] for r in rows if r["full"]]


async def may_send_as(conn: Conn, account: Account, address: Address) -> bool:
    """Whether `account` owns `address` as a sender: its own address, a +tag variant of it, or the source
    of an alias (not a catch-all) whose targets include the account."""
    if account.address in (address.key, address.base_key):
        return True
    for key in dict.fromkeys((address.key, address.base_key)):
        route = Route()
        await _expand(conn, key, address.key, route, set(), 0)
        if any(account_id == account.id for account_id, _ in route.local):
            return True
    return False


async def first_account_address(conn: Conn) -> str | None:
    """The oldest account's address: the postmaster when none is configured."""
    return await conn.fetchval("SELECT address FROM accounts ORDER BY id LIMIT 1")


async def storage_use(conn: Conn, account_id: int) -> tuple[int, int | None]:
    """(bytes used, quota in bytes or None for unlimited) of one account, as IMAP QUOTA reports them."""
    row = await conn.fetchrow("SELECT used_bytes, quota_bytes FROM accounts WHERE id = $1", account_id)
    return (0, None) if row is None else (row["used_bytes"], row["quota_bytes"])


async def accounts_over_quota(conn: Conn, account_ids: list[int], incoming: int = 0) -> list[int]:
    """Those of `account_ids` whose quota is already used up, or would be by `incoming` more bytes."""
    if not account_ids:
        return []
    rows = await conn.fetch(
        "SELECT id FROM accounts WHERE id = ANY($1::bigint[]) AND quota_bytes IS NOT NULL"
        " AND (used_bytes >= quota_bytes OR used_bytes + $2 > quota_bytes)", account_ids, incoming)
    return [r["id"] for r in rows]
