"""The typed settings of the whole server, one frozen dataclass per TOML section.

This module owns the *shape* and the *documentation* of every setting: each field says what it does where
it is declared (the `doc` metadata), and `docs/configuration.md` is checked against it by a test.
It must not read files or the environment (that is `config.loader`) and must import nothing of ours.

Each field may carry a `check` in its metadata: a function that returns an error text or None. The loader
runs it and reports the error under the field's key path (`smtp.mx.port: must be 1-65535`). A section whose
fields must agree with each other has a `cross_check()` method returning (field, problem) or None.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be 0-65535"


def _port_nonzero(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be 1-65535"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else "must be one of " + ", ".join(repr(c) for c in choices)

    return check


def _hostname(value: str) -> str | None:
    if not value or len(value) > 253 or any(c.isspace() or not c.isprintable() or c in "/@" for c in value):
        return "must be a host name"
    return None


_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def _server_hostname(value: str) -> str | None:
    """Our own name goes into greetings, EHLO, Received and Message-ID, which are ASCII (RFC 5321 §2.3.5:
    letters, digits and hyphens, labels of at most 63 octets)."""
    if _hostname(value):
        return "must be a host name"
    if not value.isascii():
        return "must be an ASCII host name (write an internationalised name as xn--...)"
    labels = value[:-1].split(".") if value.endswith(".") else value.split(".")
    if any(not 1 <= len(label) <= 63 or not set(label) <= _LDH or label[0] == "-" or label[-1] == "-"
           for label in labels):
        return "must be a host name: labels of 1-63 letters, digits and inner hyphens"
    return None


def _ip_address(value: str) -> str | None:
    import ipaddress

    if value == "":  # every interface, as 0.0.0.0
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address (0.0.0.0 or :: for every interface)"
    return None


def _ip_addresses(value: list[str]) -> str | None:
    bad = [a for a in value if not a or _ip_address(a)]
    return f"not an IP address: {bad[0]!r}" if bad else None


def _url_schemes(*schemes: str) -> Callable[[str], str | None]:
    """Empty, or a URL with one of these schemes (what the client library behind it accepts)."""
    def check(value: str) -> str | None:
        if value and value.split("://", 1)[0].lower() not in schemes or value and "://" not in value:
            return "must be a URL starting " + " or ".join(f"{s}://" for s in schemes)
        return None

    return check


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _dsn(value: str) -> str | None:
    """Empty, or postgresql://[user[:password]@]host[:port][,host[:port]...]/db[?params]: what the
    driver would otherwise refuse with a traceback (a bad port, an unclosed [IPv6, an unknown sslmode)."""
    from urllib.parse import parse_qs, urlsplit

    problem = _url_schemes("postgresql", "postgres")(value)
    if problem or not value:
        return problem
    try:
        url = urlsplit(value)
        query = parse_qs(url.query)
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    for host in url.netloc.rpartition("@")[2].split(","):
        after_host = host.rpartition("]")[2] if host.startswith("[") else host
        sep, port = after_host.rpartition(":")[1:]
        if sep and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            return f"port must be 1-65535 in {host!r}"
    for mode in query.get("sslmode", []):
        if mode not in _SSLMODES:
            return "sslmode must be one of " + ", ".join(_SSLMODES)
    return None


def _mailbox(value: str) -> str | None:
    if not value:
        return None
    local, at, domain = value.rpartition("@")
    if not at or not local or any(c.isspace() or not c.isprintable() for c in local) or _hostname(domain):
        return "must be an address user@domain"
    return None


def _networks(value: list[str]) -> str | None:
    import ipaddress

    for entry in value:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            return f"not an address or network: {entry!r}"
    return None


def setting(default: Any = None, doc: str = "", check: Callable[[Any], str | None] | None = None,
            factory: Callable[[], Any] | None = None) -> Any:
    """Declare one setting with its documentation and an optional validity check."""
    meta = {"doc": doc, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ServerSettings:
    """Who this server is and where it keeps its files."""

    hostname: str = setting("localhost", "Our host name: used in greetings, Received headers, Message-IDs "
                            "and as the authserv-id in Authentication-Results.", _server_hostname)
    data_dir: str = setting("/var/lib/mailserver", "Directory for the embedded database, generated TLS "
                            "certificates and spool files.")
    postmaster: str = setting("", "Local account (user@domain) that receives mail to postmaster and "
                              "postmaster@ every domain. Empty: the first account created.", _mailbox)
    log_level: str = setting("info", "Log level.", _one_of("debug", "info", "warning", "error"))
    mta_sts_mode: str = setting("testing", "The MTA-STS policy (RFC 8461) published for every hosted domain at "
                                "https://mta-sts.<domain>/.well-known/mta-sts.txt by the HTTP API, naming "
                                "server.hostname as the MX: testing (senders report, still deliver), enforce "
                                "(senders deliver only over TLS verified for server.hostname) or none. "
                                "'mailserver dns' prints the records that announce it.",
                                _one_of("none", "testing", "enforce"))
    shutdown_grace: float = setting(10.0, "Seconds allowed for in-flight work to finish on SIGTERM.",
                                    _non_negative)
    proxy_protocol_from: list[str] = setting(
        doc="Load balancers (addresses or CIDR networks, e.g. [\"10.0.0.5\", \"10.1.0.0/24\"]) whose "
        "connections must start with a PROXY protocol v1/v2 header, on every SMTP, IMAP and HTTP listener "
        "(before TLS on 465/993 and HTTPS); its source address is then the client's for relay decisions, SPF, rate limits, "
        "Received headers and logs, and loopback trust never applies to it. Connections from other "
        "addresses are served directly, and a PROXY header from them is refused. Empty: no balancer.",
        check=_networks, factory=list)
    proxy_protocol_timeout: float = setting(10.0, "Seconds a trusted balancer has to send the PROXY header "
                                            "before the connection is closed.", _positive)
    tls_handshake_timeout: float = setting(30.0, "Seconds a client of an implicit-TLS listener (smtp.submissions, "
                                           "imap.imaps) has to finish the TLS handshake before the connection is "
                                           "closed. Handshakes in progress count against their protocol's "
                                           "max_connections and max_connections_per_ip, apart from sessions.",
                                           _positive)
    password_cache: int = setting(
        1024, "Successful logins (SMTP AUTH, IMAP LOGIN/AUTHENTICATE, HTTP Basic) remembered per process, "
        "as a keyed hash of the stored hash and the password (never the password), so that a client logging "
        "in again with the same password skips the deliberately slow argon2 check (tens of ms of CPU). A "
        "changed password or removed account is never answered from it; failed attempts are never cached "
        "and always cost the full check. 0 turns it off.", _non_negative)
    event_loop: str = setting(
        "auto", "The asyncio event loop `serve` runs on: \"uvloop\" (libuv; measured about 10 % less CPU per "
        "SMTP message than the standard loop), \"asyncio\" (the standard library's), or \"auto\": uvloop when "
        "it is installed, else asyncio. TLS, STARTTLS and every protocol behave the same on both.",
        _one_of("auto", "uvloop", "asyncio"))
    workers: int = setting(
        1, "Processes that serve SMTP and IMAP connections. One Python process uses one core; with N > 1 "
        "this process starts N-1 worker processes that bind the same ports (SO_REUSEPORT, the kernel "
        "spreads new connections over them) and share the database. This process alone runs the outbound "
        "queue, the search indexer, the HTTP API and the embedded PostgreSQL, and restarts a worker that "
        "dies. 0: one per CPU. Connection limits and, without Redis, rate limits count per process.",
        _non_negative)

    @property
    def processes(self) -> int:
        """The processes serving connections: `workers`, or one per CPU when it is 0. Above 1, every
        listener binds with SO_REUSEPORT (mailserver.workers starts the others)."""
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)


@dataclass(frozen=True)
class DatabaseSettings:
    """The PostgreSQL mail store."""

    dsn: str = setting("", "PostgreSQL address (postgresql://user@host:port/db). Empty: start a private "
                       "embedded PostgreSQL in <data_dir>/postgres and stop it on shutdown.",
                       _dsn)
    pool_min: int = setting(2, "Minimum connections kept in the pool.", _non_negative)
    pool_max: int = setting(20, "Maximum connections in the pool.", _positive)
    command_timeout: float = setting(30.0, "Seconds before a database statement is abandoned.", _positive)

    def cross_check(self) -> tuple[str, str] | None:
        """(field, problem) when fields disagree; the loader reports it under the field's key path."""
        if self.pool_min > self.pool_max:
            return "pool_min", f"must not exceed pool_max ({self.pool_max})"
        return None


@dataclass(frozen=True)
class TLSSettings:
    """Certificates for SMTP STARTTLS/implicit TLS, IMAP and HTTPS."""

    cert_file: str = setting("", "PEM certificate chain. Empty with self_signed: generated on first start.")
    key_file: str = setting("", "PEM private key for cert_file.")
    self_signed: bool = setting(False, "Generate (once) and use a self-signed certificate in data_dir "
                                "when cert_file is empty.")


@dataclass(frozen=True)
class ListenerSettings:
    """One TCP listener."""

    enabled: bool = setting(True, "Whether this listener is started.")
    address: str = setting("0.0.0.0", "Address to bind.", _ip_address)
    port: int = setting(0, "TCP port (0 picks a free one, for tests).", _port)


def _listener(port: int, address: str = "0.0.0.0") -> Callable[[], ListenerSettings]:
    return lambda: ListenerSettings(enabled=True, address=address, port=port)


@dataclass(frozen=True)
class SMTPSettings:
    """Inbound SMTP: MX on 25, submission on 587 (STARTTLS) and 465 (implicit TLS)."""

    mx: ListenerSettings = setting(doc="MX listener: mail for our domains from other servers.",
                                   factory=_listener(25))
    submission: ListenerSettings = setting(doc="Submission with STARTTLS (RFC 6409).", factory=_listener(587))
    submissions: ListenerSettings = setting(doc="Submission with implicit TLS (RFC 8314).",
                                            factory=_listener(465))
    max_message_size: int = setting(50 * 1024 * 1024, "Largest message accepted, in bytes (SIZE).",
                                    _positive)
    max_recipients: int = setting(100, "Recipients per message; more get 452 4.5.3.", _positive)
    max_connections: int = setting(500, "Concurrent SMTP connections over all listeners.", _positive)
    max_connections_per_ip: int = setting(20, "Concurrent SMTP connections from one client address.",
                                          _positive)
    idle_timeout: float = setting(300.0, "Seconds a client may stay silent between commands "
                                  "(RFC 5321 §4.5.3.2.7).", _positive)
    data_timeout: float = setting(600.0, "Seconds allowed between chunks of DATA.", _positive)
    max_bad_commands: int = setting(20, "Unknown or bad commands before 421 and close.", _positive)
    auth_failure_delay: float = setting(1.0, "Seconds waited before answering a failed AUTH.",
                                        _non_negative)
    allow_plaintext_auth: bool = setting(False, "Allow AUTH without TLS from loopback clients (dev only).")
    spool_threshold: int = setting(1024 * 1024, "Messages larger than this are spooled to disk while "
                                   "being received.", _positive)


@dataclass(frozen=True)
class IMAPSettings:
    """The IMAP server."""

    imap: ListenerSettings = setting(doc="IMAP with STARTTLS.", factory=_listener(143))
    imaps: ListenerSettings = setting(doc="IMAP with implicit TLS.", factory=_listener(993))
    allow_plaintext_auth: bool = setting(False, "Allow LOGIN without TLS from loopback clients (dev only).")
    max_connections: int = setting(1000, "Concurrent IMAP connections over both listeners; beyond, the "
                                   "greeting is BYE [UNAVAILABLE].", _positive)
    max_connections_per_ip: int = setting(200, "Concurrent IMAP connections from one client address, logged in "
                                          "or not (max_connections_per_user caps each account's).", _positive)
    max_connections_per_user: int = setting(20, "Concurrent sessions per account and client address.",
                                            _positive)
    login_timeout: float = setting(180.0, "Seconds a client has from connecting to logging in; then BYE "
                                   "(RFC 9051 §5.4's 30 minutes of inactivity are for sessions after login).",
                                   _positive)
    idle_timeout: float = setting(1800.0, "Inactivity timeout in seconds (RFC 9051 §5.4: at least 30 "
                                  "minutes).", _positive)
    max_line_length: int = setting(65536, "Longest command line accepted, in bytes.", _positive)
    auth_failure_delay: float = setting(1.0, "Seconds waited before answering a failed login.",
                                        _non_negative)


@dataclass(frozen=True)
class SearchSettings:
    """The full-text index behind IMAP SEARCH BODY and TEXT (storage.bodyindex)."""

    index: bool = setting(True, "Run the background indexer in this process: it extracts each new "
                          "message's decoded text into the trigram-indexed message_texts table. With several "
                          "instances each may run one (they share the work). Without any, SEARCH reads raw "
                          "bodies of unindexed messages, as before.")
    batch: int = setting(200, "Messages the indexer reads, decodes and stores per transaction.", _positive)
    poll_interval: float = setting(1.0, "Seconds between the indexer's looks for new messages when it has "
                                   "caught up.", _positive)
    max_text: int = setting(256 * 1024, "Characters of decoded text indexed per message; a longer text is "
                            "cut, and SEARCH then also reads that message's raw body.", _positive)
    max_defer: float = setting(10.0, "While new mail keeps arriving, the indexer waits up to this many "
                               "seconds for a poll that finds none before it indexes anyway: a burst is stored "
                               "at full speed and indexed after it (SEARCH reads the raw bodies of messages not "
                               "indexed yet, so results are the same). 0: index at every poll.", _non_negative)


@dataclass(frozen=True)
class HTTPSettings:
    """The HTTP API."""

    listener: ListenerSettings = setting(doc="HTTP API listener.", factory=_listener(8443))
    tls: bool = setting(True, "Serve HTTPS with the certificate from [tls].")
    allow_plaintext_basic: bool = setting(False, "Accept HTTP Basic (account passwords) over plain HTTP "
                                          "from loopback clients (dev only). API tokens work over "
                                          "plain HTTP regardless; prefer tls.")
    max_request_size: int = setting(72 * 1024 * 1024, "Largest request body accepted, in bytes (413 "
                                    "beyond). Leave room for base64 (4/3) over smtp.max_message_size.",
                                    _positive)
    requests_per_minute: float = setting(600.0, "API requests per minute per token or account "
                                         "(token bucket; 429 with Retry-After beyond).", _positive)
    idempotency_ttl: float = setting(86400.0, "Seconds an Idempotency-Key is remembered with its "
                                     "response.", _positive)
    metrics: bool = setting(True, "Serve Prometheus metrics at /metrics (unauthenticated: restrict "
                            "it at the network if the numbers are private).")
    max_connections: int = setting(1000, "Concurrent HTTP connections; beyond, 503 and close.", _positive)
    max_connections_per_ip: int = setting(100, "Concurrent HTTP connections from one client address; beyond, "
                                          "503 and close.", _positive)
    header_timeout: float = setting(60.0, "Seconds a client has to send a whole request head (request line "
                                    "and header fields), from the connection or from its first byte; beyond, "
                                    "408 and close (a silent or slowly trickling client holds no connection).",
                                    _positive)
    body_timeout: float = setting(60.0, "Seconds allowed between two reads of a request body; beyond, the "
                                  "connection is closed.", _positive)


@dataclass(frozen=True)
class LimitSettings:
    """Rate limits shared by every protocol of the process (and, with [redis], every instance): token
    buckets that hold the given number and refill evenly over their window."""

    auth_failures: int = setting(10, "Failed logins allowed per client address and per account within "
                                 "auth_failure_window, counted over SMTP AUTH, IMAP LOGIN/AUTHENTICATE and "
                                 "HTTP Basic together; beyond, SMTP answers 454 4.7.0, IMAP NO [UNAVAILABLE] "
                                 "and HTTP 429.", _positive)
    auth_failure_window: float = setting(600.0, "Seconds over which auth_failures refills.", _positive)
    smtp_connections_per_minute: float = setting(120.0, "New SMTP connections per client address per minute "
                                                 "over all listeners (a rate; smtp.max_connections_per_ip caps "
                                                 "the concurrent ones); beyond, 421 4.7.0.", _positive)
    messages_per_hour: float = setting(500.0, "Messages an account may send per hour over SMTP submission "
                                       "and the API together; beyond, SMTP 451 4.7.1 at MAIL and HTTP 429.",
                                       _positive)


@dataclass(frozen=True)
class DNSSettings:
    """The one resolver used for MX, SPF, DKIM, DMARC and reverse lookups."""

    nameservers: list[str] = setting(doc="Name server addresses. Empty: those of /etc/resolv.conf.",
                                     check=_ip_addresses, factory=list)
    port: int = setting(53, "Port of the name servers.", _port_nonzero)
    timeout: float = setting(5.0, "Seconds before a lookup gives up (a temperror).", _positive)
    cache_size: int = setting(10000, "Answers kept in the resolver's cache (0 disables it).",
                              _non_negative)


@dataclass(frozen=True)
class AuthPolicySettings:
    """What inbound sender authentication results do to a message."""

    enforce: bool = setting(True, "Act on DMARC reject/quarantine. False records results only "
                            "(the --dev default).")
    dmarc_reject: str = setting("reject", "What a DMARC p=reject failure does.",
                                _one_of("reject", "quarantine", "none"))
    dmarc_quarantine: str = setting("quarantine", "What a DMARC p=quarantine failure does.",
                                    _one_of("reject", "quarantine", "none"))
    timeout: float = setting(30.0, "Seconds SPF (from MAIL FROM) and, separately, the end-of-data checks "
                             "(DKIM, ARC, DMARC) may take in all; past it the result is a temperror: "
                             "451 4.7.1 when enforcing, else delivered with the temperror recorded.",
                             _positive)


_TRANSPORT_SCHEMES = ("smtp", "smtp+starttls", "smtps")


def _transport_url(value: str) -> str | None:
    """One transport: `smtp://host[:port]` (opportunistic STARTTLS), `smtp+starttls://` (STARTTLS
    required, certificate verified) or `smtps://` (implicit TLS, verified); `user:password@` adds AUTH,
    which is allowed only over verified TLS."""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        return "must be a URL like smtp://host:port"
    if url.scheme not in _TRANSPORT_SCHEMES:
        return "scheme must be one of " + ", ".join(_TRANSPORT_SCHEMES)
    if not url.hostname or _hostname(url.hostname):
        return "must name a host"
    if port == 0:
        return "port must be 1-65535"
    if url.path not in ("", "/") or url.query or url.fragment:
        return "must be scheme://[user:password@]host[:port] with nothing after"
    if url.username is not None and url.scheme == "smtp":
        return "user:password needs smtp+starttls:// or smtps:// (never AUTH in clear)"
    return None


def _transports(value: dict[str, str]) -> str | None:
    for key, url in value.items():
        if key != "*" and _hostname(key):
            return f"{key!r}: key must be a domain or '*'"
        problem = _transport_url(url)
        if problem:
            return f"{key!r}: {problem}"
    return None


def _domains(value: list[str]) -> str | None:
    bad = [d for d in value if _hostname(d)]
    return f"not a domain: {bad[0]!r}" if bad else None


@dataclass(frozen=True)
class QueueSettings:
    """The outbound queue."""

    workers: int = setting(32, "Queue entries delivered at once by this process (claimed in one batch "
                           "when that many are due; at most max_per_destination connections go to one host).",
                           _positive)
    retry_initial: float = setting(300.0, "First retry delay in seconds.", _positive)
    retry_max: float = setting(4 * 3600.0, "Longest retry delay in seconds.", _positive)
    give_up_after: float = setting(5 * 86400.0, "Seconds after which a deferred message bounces.",
                                   _positive)
    lease_seconds: float = setting(300.0, "How long a worker's claim on a queue entry lasts.", _positive)
    poll_interval: float = setting(5.0, "Seconds between queue scans when idle.", _positive)
    transports: dict[str, str] = setting(
        doc="Where mail for a domain goes instead of its MX: a table of domain = URL, with the key '*' for "
        "every other domain (a smarthost). URLs: smtp://host[:port] (port 25, opportunistic STARTTLS), "
        "smtp+starttls://[user:password@]host[:port] (port 587, STARTTLS required and verified), "
        "smtps://[user:password@]host[:port] (port 465, implicit TLS, verified). AUTH only over TLS.",
        check=_transports, factory=dict)
    require_tls: list[str] = setting(doc="Domains whose MX hosts must offer STARTTLS with a certificate "
                                     "valid for the MX name; otherwise the mail waits (temporary failure). "
                                     "Other domains get opportunistic TLS: STARTTLS when offered, any "
                                     "certificate, and plaintext when the server refuses STARTTLS or the "
                                     "handshake fails (at once, on a new connection).",
                                     check=_domains, factory=list)
    tls_ca_file: str = setting("", "PEM bundle of CAs trusted when TLS is verified. Empty: the system's.")
    mx_port: int = setting(25, "Port used for MX hosts (change only for tests).", _port_nonzero)
    mta_sts: bool = setting(True, "Honour recipient domains' MTA-STS policies (RFC 8461): for a domain whose "
                            "policy is in enforce mode, mail goes only to the MX hosts it names, over TLS verified "
                            "for the host name, or waits (temporary failure). Domains in require_tls and "
                            "transports are not affected.")
    tls_reports: bool = setting(False, "Send TLS-RPT aggregate reports (RFC 8460): once a UTC day, for the day "
                                "before, to each recipient domain that publishes an _smtp._tls record, how "
                                "STARTTLS went with its MX hosts (by mail, DKIM-signed for server.hostname's "
                                "domain when it has a key, or HTTPS POST). Off by default: large providers (Google, "
                                "Microsoft) send them, Postfix does not unless an external reporter is set up; "
                                "they tell each domain our daily volume to it and send mail to addresses others "
                                "choose, which a small server should decide to do (docs/operations.md).")
    mta_sts_port: int = setting(443, "Port of the HTTPS servers MTA-STS policies are fetched from (change only "
                                "for tests).", _port_nonzero)
    connect_timeout: float = setting(300.0, "Seconds for TCP connect plus the 220 greeting "
                                     "(RFC 5321 §4.5.3.2.1: 5 minutes).", _positive)
    command_timeout: float = setting(300.0, "Seconds for each reply to EHLO, STARTTLS, MAIL, RCPT and "
                                     "DATA (RFC 5321 §4.5.3.2.2-4: 5 minutes).", _positive)
    data_timeout: float = setting(600.0, "Seconds to send the message and get the final reply to DATA "
                                  "(RFC 5321 §4.5.3.2.5-6: 3 minutes per block, 10 for the end).", _positive)
    max_per_destination: int = setting(10, "Concurrent connections from this process to one destination "
                                       "host.", _positive)
    breaker_failures: int = setting(5, "Consecutive connection failures after which a destination host is "
                                    "left alone for breaker_cooldown (its mail stays queued).", _positive)
    breaker_cooldown: float = setting(300.0, "Seconds a tripped destination is left alone before one "
                                      "probe connection is allowed.", _positive)
    delay_warning_after: float = setting(4 * 3600.0, "Seconds after which a sender who asked for delay "
                                         "notices (the default) gets one 'delayed' DSN. 0: never.",
                                         _non_negative)


@dataclass(frozen=True)
class RedisSettings:
    """Optional Redis for shared rate limits and caches."""

    url: str = setting("", "redis://host:port/db. Empty: in-process limits and caches.",
                       _url_schemes("redis", "rediss", "unix"))
    timeout: float = setting(0.25, "Seconds before a Redis call is given up (then the local fallback).",
                             _positive)
    key_prefix: str = setting("mailserver:", "Prefix of every key we write, so one Redis can serve "
                              "several installations.")
    retry_after: float = setting(5.0, "Seconds the local fallback is used after a Redis failure before "
                                 "Redis is tried again (so an outage costs one timeout, not one per "
                                 "request).", _positive)


@dataclass(frozen=True)
class Settings:
    """Everything the server reads at start."""

    server: ServerSettings = setting(doc="Identity and files.", factory=ServerSettings)
    database: DatabaseSettings = setting(doc="The mail store.", factory=DatabaseSettings)
    tls: TLSSettings = setting(doc="Certificates.", factory=TLSSettings)
    smtp: SMTPSettings = setting(doc="Inbound SMTP.", factory=SMTPSettings)
    imap: IMAPSettings = setting(doc="IMAP.", factory=IMAPSettings)
    search: SearchSettings = setting(doc="Full-text search index.", factory=SearchSettings)
    http: HTTPSettings = setting(doc="HTTP API.", factory=HTTPSettings)
    limits: LimitSettings = setting(doc="Rate limits shared by SMTP, IMAP and the API.", factory=LimitSettings)
    dns: DNSSettings = setting(doc="DNS resolver.", factory=DNSSettings)
    auth: AuthPolicySettings = setting(doc="Inbound authentication policy.", factory=AuthPolicySettings)
    queue: QueueSettings = setting(doc="Outbound queue.", factory=QueueSettings)
    redis: RedisSettings = setting(doc="Redis.", factory=RedisSettings)
    dev: bool = setting(False, "Set by --dev: the development profile is in force.")


# The --dev profile, applied under the file and the environment: unprivileged ports that docs and tools
# agree on, an embedded database in ./data, a self-signed certificate, plaintext auth on loopback.
DEV_PROFILE: dict[str, Any] = {
    "dev": True,
    "server": {"hostname": "localhost", "data_dir": "./data"},
    "tls": {"self_signed": True},
    "smtp": {
        "mx": {"address": "127.0.0.1", "port": 2525},
        "submission": {"address": "127.0.0.1", "port": 2587},
        "submissions": {"address": "127.0.0.1", "port": 2465},
        "allow_plaintext_auth": True,
        "auth_failure_delay": 0.2,
    },
    "imap": {
        "imap": {"address": "127.0.0.1", "port": 2143},
        "imaps": {"address": "127.0.0.1", "port": 2993},
        "allow_plaintext_auth": True,
        "auth_failure_delay": 0.2,
    },
    "http": {"listener": {"address": "127.0.0.1", "port": 8025}, "tls": False, "allow_plaintext_basic": True},
    "dns": {"timeout": 1.0},
    "auth": {"enforce": False, "timeout": 5.0},
    "queue": {"retry_initial": 60.0},
}
