"""The `mailserver` command: serve, config check, db, domain, user, alias, queue, API token, DKIM key
and DNS record administration.

Owns argument parsing, exit statuses and what the admin reads. Exit 0 on success, 1 when the store
refuses an operation (unknown domain, duplicate account, ...), 2 for usage and configuration errors,
which are printed as one line naming the key, never a traceback. Passwords come from a prompt or
standard input, never from argv (where `ps` would show them).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import math
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from config import ConfigError, Settings, load_settings
from mailcore.address import AddressError, parse_address
from mailcore.auth.dkim import ALGORITHMS, generate_key, public_record
from mailcore.autoconfig import endpoints_from_settings
from mailcore.passwords import hash_password
from mailcore.tls import TLSConfigError, certificate_paths, server_context
from mailserver import dnsrecords
from mailserver.workers import WorkerFailed
from storage import accounts, dkim_keys, queue, tokens
from storage.accounts import StoreError
from storage.db import Database, StorageUnavailable
from storage.migrations import applied_versions, apply_migrations, available

DEFAULT_CONFIG = "/etc/mailserver/mailserver.toml"
BIGINT_MAX = 2**63 - 1  # PostgreSQL bigint: ids and quotas


class UsageError(Exception):
    """A command used wrongly; exit 2."""


def _row_id(text: str) -> int:
    """A queue entry or token id: argparse reports anything else as a usage error (a number past
    bigint was a traceback from the database driver)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid id {text!r}: must be a whole number") from None
    if not 1 <= value <= BIGINT_MAX:
        raise argparse.ArgumentTypeError(f"invalid id {text!r}: must be 1-{BIGINT_MAX}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}: must be greater than 0")
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML configuration file "
                        f"(default: $MAILSERVER_CONFIG, else {DEFAULT_CONFIG} if it exists)")
    common.add_argument("--dev", action="store_true", help="development profile: embedded database in "
                        "./data, self-signed TLS, unprivileged ports, a demo account")

    p = argparse.ArgumentParser(prog="mailserver", description="A mail server for your own domains.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("serve", parents=[common], help="run the server until SIGTERM/SIGINT")

    health = sub.add_parser("health", parents=[common], help="check the database is reachable and migrated "
                            "(exit 0 healthy, 1 not)")
    health.add_argument("--timeout", type=_seconds, default=5.0, help="seconds to wait for the database")

    cfg = sub.add_parser("config", help="configuration").add_subparsers(dest="action", required=True)
    check = cfg.add_parser("check", parents=[common], help="validate a configuration file and exit")
    check.add_argument("file", nargs="?", help="file to check (default: --config)")
    check.add_argument("--no-files", action="store_true", help="skip what only the server's machine can "
                       "answer (data_dir, TLS certificate and key, CA bundle), to check a file elsewhere")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("migrate", parents=[common], help="apply pending migrations")
    db.add_parser("status", parents=[common], help="show applied and pending migrations")

    dom = sub.add_parser("domain", help="hosted domains").add_subparsers(dest="action", required=True)
    dom.add_parser("add", parents=[common], help="host a domain").add_argument("domain")
    dom.add_parser("list", parents=[common], help="list hosted domains")
    dom.add_parser("remove", parents=[common], help="stop hosting a domain").add_argument("domain")

    usr = sub.add_parser("user", help="mail accounts").add_subparsers(dest="action", required=True)
    add = usr.add_parser("add", parents=[common], help="create an account (password from prompt or stdin)")
    add.add_argument("address")
    add.add_argument("--quota", metavar="BYTES", help="storage quota, e.g. 1G, 500M, 0 for none")
    usr.add_parser("passwd", parents=[common], help="set a password (prompt or stdin)").add_argument("address")
    lst = usr.add_parser("list", parents=[common], help="list accounts")
    lst.add_argument("--domain")
    usr.add_parser("remove", parents=[common], help="delete an account and its mail").add_argument("address")
    quota = usr.add_parser("quota", parents=[common], help="set a quota (none: unlimited)")
    quota.add_argument("address")
    quota.add_argument("quota", help="bytes, with K/M/G suffix, or 'none'")

    ali = sub.add_parser("alias", help="aliases and catch-alls").add_subparsers(dest="action", required=True)
    aadd = ali.add_parser("add", parents=[common], help="alias SOURCE (user@domain or @domain) to TARGETs")
    aadd.add_argument("source")
    aadd.add_argument("targets", nargs="+")
    alst = ali.add_parser("list", parents=[common], help="list aliases")
    alst.add_argument("--domain")
    arem = ali.add_parser("remove", parents=[common], help="remove an alias or one of its targets")
    arem.add_argument("source")
    arem.add_argument("target", nargs="?")

    que = sub.add_parser("queue", help="the outbound queue").add_subparsers(dest="action", required=True)
    que.add_parser("list", parents=[common], help="list queued and held entries")
    que.add_parser("show", parents=[common], help="show one entry and its recipients").add_argument("id", type=_row_id)
    qretry = que.add_parser("retry", parents=[common], help="make an entry (or --all) due now")
    qretry.add_argument("id", type=_row_id, nargs="?")
    qretry.add_argument("--all", action="store_true", help="every queued entry")
    que.add_parser("delete", parents=[common], help="remove an entry without delivering or bouncing it"
                   ).add_argument("id", type=_row_id)
    que.add_parser("hold", parents=[common], help="stop attempts for an entry").add_argument("id", type=_row_id)
    que.add_parser("release", parents=[common], help="release a held entry, due now").add_argument("id", type=_row_id)
    tok = sub.add_parser("token", help="HTTP API tokens").add_subparsers(dest="action", required=True)
    tcreate = tok.add_parser("create", parents=[common], help="create a token (printed once) for an account")
    tcreate.add_argument("address")
    tcreate.add_argument("--scope", required=True, help="comma-separated: send, read, admin")
    tcreate.add_argument("--name", default="", help="a label to recognise the token by")
    tok.add_parser("list", parents=[common], help="list tokens").add_argument("address", nargs="?")
    tok.add_parser("revoke", parents=[common], help="revoke a token by id").add_argument("id", type=_row_id)

    dk = sub.add_parser("dkim", help="DKIM signing keys").add_subparsers(dest="action", required=True)
    gen = dk.add_parser("generate", parents=[common], help="make and store a signing key; print its DNS record")
    gen.add_argument("domain")
    gen.add_argument("--selector", help="DNS selector (default: <algorithm><YYYYMMDD>)")
    gen.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa",
                     help="rsa (2048 bits, the default: every receiver verifies it) or ed25519 (RFC 8463)")
    dk.add_parser("show", parents=[common], help="a domain's keys and their DNS records").add_argument("domain")

    sub.add_parser("dns", parents=[common], help="print every DNS record a hosted domain needs"
                   ).add_argument("domain")
    return p


def load(args: argparse.Namespace, file: str | None = None) -> Settings:
    """Settings for this invocation: --config (or the default file), --dev, then the environment."""
    path = file or args.config or os.environ.get("MAILSERVER_CONFIG")
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return load_settings(path, dev=args.dev, environ=os.environ)


def parse_size(text: str) -> int | None:
    """'1G', '500M', '10k', '1234', 'none' -> bytes (None: unlimited)."""
    t = text.strip().lower()
    if t in ("none", "unlimited"):
        return None
    mult = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in "kmgt" else t
    if not (digits.isascii() and digits.isdigit()):
        raise UsageError(f"invalid size {text!r}: use bytes with an optional K, M, G or T suffix")
    size = int(digits) * mult
    if size > BIGINT_MAX:
        raise UsageError(f"invalid size {text!r}: at most {BIGINT_MAX} bytes")
    return size


def read_password(confirm: bool = True) -> str:
    """A password from an interactive prompt (asked twice), or the first line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Again: ") != first:
            raise UsageError("passwords do not match")
        password = first
    else:
        line = sys.stdin.buffer.readline()
        try:
            password = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise UsageError("password on standard input is not valid UTF-8") from None
    if len(password) < 8:
        raise UsageError("password must be at least 8 characters")
    return password


async def _with_db(settings: Settings, work: Callable[[Database], Awaitable[int]]) -> int:
    db = await Database.open(settings.database, settings.server.data_dir, pool_min=1, pool_max=2)
    try:
        return await work(db)
    finally:
        await db.close()


async def _health(settings: Settings, within: float) -> int:
    """`mailserver health`: one line, exit 0 when the database answers and every migration is applied."""
    from storage.health import database_health

    if settings.database.dsn:
        report = await database_health(settings.database.dsn, within)
    else:  # the embedded server: join it (or start it) just to ask
        db = await Database.open(settings.database, settings.server.data_dir, migrate=False, pool_min=0,
                                 pool_max=1)
        try:
            report = await database_health(db.dsn, within)
        finally:
            await db.close()
    print(report.summary(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _print_rows(rows: Sequence[Sequence[Any]]) -> None:
    for row in rows:
        print("\t".join("" if v is None else str(v) for v in row))


async def _admin(args: argparse.Namespace, db: Database, settings: Settings) -> int:
    pool = db.pool
    cmd, action = args.command, getattr(args, "action", None)
    if cmd == "db" and action == "migrate":
        async with pool.acquire() as conn:
            done = await apply_migrations(conn)
        print(f"applied {len(done)} migration(s)" + "".join(f"\n  {m.version:04d} {m.name}" for m in done))
    elif cmd == "db" and action == "status":
        async with pool.acquire() as conn:
            have = await applied_versions(conn)
        for m in available():
            print(f"{m.version:04d} {m.name}\t" + (f"applied {have[m.version]}" if m.version in have else "pending"))
    elif cmd == "domain" and action == "add":
        await accounts.add_domain(pool, args.domain)
        print(f"domain {args.domain.lower()} added")
    elif cmd == "domain" and action == "list":
        _print_rows([(d,) for d in await accounts.list_domains(pool)])
    elif cmd == "domain" and action == "remove":
        await accounts.remove_domain(pool, args.domain)
        print(f"domain {args.domain.lower()} removed")
    elif cmd == "user" and action == "add":
        quota = parse_size(args.quota) if args.quota else None
        _check_address(args.address)
        await accounts.add_account(pool, args.address, await hash_password(read_password()), quota or None)
        print(f"account {args.address.lower()} created")
    elif cmd == "user" and action == "passwd":
        if await accounts.get_account(pool, args.address) is None:
            raise StoreError(f"no such account: {args.address}")
        await accounts.set_password(pool, args.address, await hash_password(read_password()))
        print(f"password of {args.address.lower()} changed")
    elif cmd == "user" and action == "list":
        rows = await accounts.list_accounts(pool, args.domain)
        _print_rows([(a.address, a.used_bytes, a.quota_bytes if a.quota_bytes is not None else "unlimited",
                      "disabled" if a.disabled else "") for a in rows])
    elif cmd == "user" and action == "remove":
        await accounts.remove_account(pool, args.address)
        print(f"account {args.address.lower()} removed")
    elif cmd == "user" and action == "quota":
        await accounts.set_quota(pool, args.address, parse_size(args.quota))
        print(f"quota of {args.address.lower()} set to {args.quota}")
    elif cmd == "alias" and action == "add":
        await accounts.add_alias(pool, args.source, args.targets)
        print(f"alias {args.source.lower()} -> {', '.join(args.targets)} added")
    elif cmd == "alias" and action == "list":
        _print_rows(await accounts.list_aliases(pool, args.domain))
    elif cmd == "alias" and action == "remove":
        await accounts.remove_alias(pool, args.source, args.target)
        print(f"alias {args.source.lower()} removed")
    elif cmd == "queue":
        await _queue(args, db)
    elif cmd == "token" and action == "create":
        if not args.name.isprintable():
            # `token list` prints one tab-separated line per token: a tab or newline would break it
            raise UsageError("token --name: printable characters only (no tabs, newlines or controls)")
        token, secret = await tokens.create_token(pool, args.address, tokens.parse_scopes(args.scope), args.name)
        print(f"token {token.id} for {token.address} ({','.join(token.scopes)}); shown once, keep it safe:",
              file=sys.stderr)
        print(secret)
    elif cmd == "token" and action == "list":
        _print_rows([(t.id, t.address, t.name, ",".join(t.scopes), t.created_at.isoformat(timespec="seconds"),
                      t.last_used.isoformat(timespec="seconds") if t.last_used else "never",
                      "revoked" if t.revoked_at else "") for t in await tokens.list_tokens(pool, args.address)])
    elif cmd == "token" and action == "revoke":
        await tokens.revoke_token(pool, args.id)
        print(f"token {args.id} revoked")
    elif cmd == "dkim":
        await _dkim(args, db)
    elif cmd == "dns":
        await _dns(args, db, settings)
    else:  # pragma: no cover - argparse restricts the choices
        raise UsageError(f"unknown command {cmd} {action}")
    return 0


def _when(value: Any) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


async def _queue(args: argparse.Namespace, db: Database) -> None:
    pool, action = db.pool, args.action
    if action == "list":
        entries = await queue.list_entries(pool)
        if not entries:
            print("queue is empty")
            return
        _print_rows([("ID", "STATE", "QUEUED", "NEXT ATTEMPT", "TRIES", "SENDER", "TO DO", "LAST ERROR")]
                    + [(e.id, e.state + (" (in delivery)" if e.lease_owner else ""), _when(e.created_at),
                        _when(e.next_attempt), e.attempts, e.sender or "<>",
                        sum(r.status in ("pending", "deferred") for r in e.recipients),
                        (e.last_error or "")[:80]) for e in entries])
    elif action == "show":
        e = await queue.get_entry(pool, args.id)
        print(f"id:            {e.id}\nstate:         {e.state}\nsender:        <{e.sender}>\n"
              f"queued:        {_when(e.created_at)}\nnext attempt:  {_when(e.next_attempt)}\n"
              f"attempts:      {e.attempts}\nsigned:        {'yes' if e.signed_prefix else 'no'}\n"
              f"lease:         {e.lease_owner or '-'} until {_when(e.lease_expires)}\n"
              f"dsn:           ret={e.ret or '-'} envid={e.envid or '-'}\nrecipients:")
        _print_rows([("", r.recipient, r.status, r.status_code or "", r.attempts, r.last_error or "")
                     for r in e.recipients])
    elif action == "retry":
        if args.all == (args.id is not None):
            raise UsageError("queue retry: give an ID or --all")
        count = await queue.retry_now(pool, None if args.all else args.id)
        print(f"{count} queue entr{'y' if count == 1 else 'ies'} due now")
    elif action == "delete":
        await queue.delete(pool, args.id)
        print(f"queue entry {args.id} deleted")
    elif action == "hold":
        await queue.hold(pool, args.id)
        print(f"queue entry {args.id} held")
    elif action == "release":
        await queue.release_held(pool, args.id)
        print(f"queue entry {args.id} released")


def _key_record(key: dkim_keys.DKIMKey, signing: bool) -> dnsrecords.KeyRecord:
    return dnsrecords.KeyRecord(key.selector, public_record(key.private_key), signing)


async def _dkim(args: argparse.Namespace, db: Database) -> None:
    domain = args.domain.lower().rstrip(".")
    if args.action == "generate":
        algorithm = ALGORITHMS[args.algorithm]
        selector = args.selector or f"{args.algorithm}{dt.date.today():%Y%m%d}"
        _check_selector(selector, domain)
        await dkim_keys.list_keys(db.pool, domain)  # refuse an unknown domain before the slow part
        pem, value = await asyncio.to_thread(generate_key, args.algorithm)
        await dkim_keys.add_key(db.pool, domain, selector, pem, algorithm)
        record = dnsrecords.KeyRecord(selector, value, True)
        print(f"DKIM key {selector} ({algorithm}) stored for {domain}; it signs {domain}'s mail from now on.\n"
              "Publish this DNS TXT record now: receivers cannot verify the signatures until they see it.\n\n"
              f"  name:  {dnsrecords.dkim_name(domain, selector)}\n  value: {value}\n\n"
              f"As a zone-file line:\n{dnsrecords.dkim_record(domain, record)}")
        if args.algorithm == "ed25519":
            print("\nNote: many receivers do not verify ed25519 signatures yet (RFC 8463) and treat such mail as\n"
                  "unsigned. Only the newest key signs: an RSA key is the safer choice for now.")
        return
    keys = await dkim_keys.list_keys(db.pool, domain)
    if not keys:
        raise StoreError(f"no DKIM key for {domain} (create one with 'mailserver dkim generate {domain}')")
    for i, key in enumerate(keys):
        record = _key_record(key, i == 0)
        print(f"{dnsrecords.dkim_name(domain, key.selector)}\t{key.algorithm}\tcreated {_when(key.created_at)}"
              + ("\tsigning" if record.signing else "\tnot signing (older)"))
        print(f"  value: {record.value}\n{dnsrecords.dkim_record(domain, record)}\n")


async def _dns(args: argparse.Namespace, db: Database, settings: Settings) -> None:
    domain = args.domain.lower().rstrip(".")
    keys = await dkim_keys.list_keys(db.pool, domain)
    hostname = settings.server.hostname
    if "." not in hostname or hostname.endswith(".localhost"):
        print(f"mailserver: warning: server.hostname is {hostname!r}, not a public name; set it before "
              "publishing these records", file=sys.stderr)
    lines = dnsrecords.domain_records(domain, hostname, [_key_record(k, i == 0) for i, k in enumerate(keys)],
                                      endpoints_from_settings(settings), settings.server.mta_sts_mode)
    print("\n".join(lines))


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse an argument that is not UTF-8: Python hands such bytes over as lone surrogates, which
    failed later, in the database driver, with a traceback."""
    for name, value in vars(args).items():
        if name in ("config", "file"):  # a path: any bytes the file system allows
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    shown = item.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
                    raise UsageError(f"{name} '{shown}': not valid UTF-8") from None


def _listeners(settings: Settings) -> list[tuple[str, Any]]:
    return [("smtp.mx", settings.smtp.mx), ("smtp.submission", settings.smtp.submission),
            ("smtp.submissions", settings.smtp.submissions), ("imap.imap", settings.imap.imap),
            ("imap.imaps", settings.imap.imaps), ("http.listener", settings.http.listener)]


def check_files(settings: Settings) -> None:
    """What `config check` and `serve` verify beyond the file itself: the data directory, the TLS
    certificate and key, the CA bundle. Each problem is a ConfigError naming its key."""
    data_dir = Path(settings.server.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError("server.data_dir", f"{data_dir} is not a directory")
    if settings.tls.cert_file:  # with self_signed and no cert_file, serve makes one: nothing to check
        paths = certificate_paths(settings.tls, data_dir, settings.server.hostname)
        if paths is not None:
            server_context(*paths)
    if settings.queue.tls_ca_file:
        try:
            ssl.create_default_context(cafile=settings.queue.tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("queue.tls_ca_file", f"cannot load {settings.queue.tls_ca_file}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None


def check_listeners(settings: Settings) -> None:
    """Bind every enabled listener once, as `serve` will, so that a port in use or not ours to take is
    reported under its key rather than as a traceback from the middle of start-up."""
    held: list[socket.socket] = []
    try:
        for key, listener in _listeners(settings):
            if not listener.enabled:
                continue
            host = listener.address or "0.0.0.0"
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if settings.server.processes > 1 and hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((host, listener.port))
                sock.listen(1)  # two listeners on one port: only a listening socket makes the second fail
            except OSError as exc:
                raise ConfigError(f"{key}.port", f"cannot listen on {host} port {listener.port}: "
                                  f"{exc.strerror or exc}") from None
    finally:
        for sock in held:
            sock.close()


_SELECTOR_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _check_selector(selector: str, domain: str) -> None:
    """A selector is published as DNS labels (RFC 6376 §3.1, §3.6.2.1): refuse one that cannot be (a
    label over 63 octets, an empty label, a name over 253), which the store accepted. Exit 1, like an invalid address."""
    labels = selector.split(".")
    if any(not 1 <= len(label) <= 63 or not set(label) <= _SELECTOR_CHARS for label in labels):
        raise StoreError(f"invalid selector {selector!r}: dot-separated DNS labels of 1-63 letters, "
                         "digits, '-' or '_'")
    name = dnsrecords.dkim_name(domain, selector)
    if len(name) > 253:
        raise StoreError(f"invalid selector {selector!r}: {name} is longer than a DNS name may be (253)")


def _check_address(text: str) -> None:
    try:
        parse_address(text)
    except AddressError as exc:
        raise StoreError(f"invalid address {text!r}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mailserver` console script."""
    args = _parser().parse_args(argv)
    try:
        _check_arguments(args)
        if args.command == "config":
            settings = load(args, args.file)
            if not args.no_files:
                check_files(settings)
            print(f"configuration OK: {args.file or args.config or 'defaults'}")
            return 0
        settings = load(args)
        if args.command == "serve":
            from mailserver.app import loop_factory, run
            from mailserver.logs import setup_logging

            check_files(settings)
            try:  # serve makes it anyway (certificates, spool, embedded database): fail here, named
                Path(settings.server.data_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError("server.data_dir", f"cannot create {settings.server.data_dir}: "
                                  f"{exc.strerror or exc}") from None
            check_listeners(settings)
            setup_logging(settings.server.log_level)
            try:
                with asyncio.Runner(loop_factory=loop_factory(settings.server.event_loop)) as runner:
                    runner.run(run(settings))
            except OSError as exc:  # start-up lost a race for a port, or a directory went away
                print(f"mailserver: cannot start: {exc}", file=sys.stderr)
                return 1
            return 0
        if args.command == "health":
            return asyncio.run(_health(settings, args.timeout))
        return asyncio.run(_with_db(settings, lambda db: _admin(args, db, settings)))
    except (ConfigError, TLSConfigError) as exc:
        print(f"mailserver: configuration error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"mailserver: {exc}", file=sys.stderr)
        return 2
    except WorkerFailed as exc:
        print(f"mailserver: {exc}; its log lines above say why", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"mailserver: {exc}", file=sys.stderr)
        return 1
    except StorageUnavailable as exc:
        print(f"mailserver: database unavailable: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
