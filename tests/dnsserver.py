"""A real DNS server on loopback for tests, serving zones given as Python data (built on dnslib).

    with DNSTestServer({"example.test": {"TXT": ["v=spf1 -all"], "A": ["192.0.2.1"],
                                         "MX": [(10, "mx.example.test.")]}},
                       servfail={"broken.test"}, drop={"slow.test"}) as server:
        settings = DNSSettings(nameservers=["127.0.0.1"], port=server.port, timeout=0.5)

Records have the shape `mailcore.dns.fake.FakeResolver` takes (TXT, A, AAAA, MX, PTR, CNAME; a TXT value
may be a list of character-strings; PTR records live under their reverse name). UDP and TCP listen on the
same ephemeral port of 127.0.0.1; UDP answers too big for the client are truncated (TC) so clients retry
over TCP. Names in `servfail` get SERVFAIL, names in `drop` get no answer at all (a timeout). Negative
answers carry an SOA so that resolvers may cache them (RFC 2308). Only reserved names belong here
(.test, .example, .invalid, and the reverse zones of documentation addresses).

It owns nothing of the server's code and runs in two daemon threads; `stop()` ends them.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

TTL = 300


def _norm(name: str) -> str:
    return str(name).rstrip(".").lower()


def _txt_strings(value: Any) -> list[bytes]:
    parts = list(value) if isinstance(value, list | tuple) else [value]
    out: list[bytes] = []
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        # One character-string holds at most 255 bytes (RFC 1035 §3.3.14).
        out.extend(data[i:i + 255] for i in range(0, len(data), 255)) if data else out.append(b"")
    return out


class _Zone:
    def __init__(self, records: Mapping[str, Mapping[str, Any]], servfail: Iterable[str],
                 drop: Iterable[str]) -> None:
        self.records = {_norm(n): {t.upper(): v for t, v in rrs.items()} for n, rrs in records.items()}
        self.servfail = {_norm(n) for n in servfail}
        self.drop = {_norm(n) for n in drop}
        self.lock = threading.Lock()
        self.queries: list[tuple[str, str, str]] = []

    def rrs(self, name: str, rtype: str, values: Any) -> list[RR]:
        if rtype == "CNAME":
            values = [values] if isinstance(values, str) else values
        elif not isinstance(values, list):
            values = [values]
        out = []
        for value in values:
            if rtype == "A":
                rdata = A(value)
            elif rtype == "AAAA":
                rdata = AAAA(value)
            elif rtype == "MX":
                rdata = MX(value[1], value[0])
            elif rtype == "TXT":
                rdata = TXT(_txt_strings(value))
            elif rtype == "PTR":
                rdata = PTR(value)
            elif rtype == "CNAME":
                rdata = CNAME(value)
            else:
                continue
            out.append(RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=TTL))
        return out

    def answer(self, request: DNSRecord, protocol: str) -> DNSRecord | None:
        reply = request.reply()
        qname = str(request.q.qname)
        qtype = QTYPE.get(request.q.qtype)
        name = _norm(qname)
        with self.lock:
            self.queries.append((name, str(qtype), protocol))
        if name in self.drop:
            return None
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        owner = qname
        for _ in range(16):
            rrs = self.records.get(name)
            if rrs is None:
                reply.header.rcode = RCODE.NXDOMAIN
                break
            if qtype in rrs:
                reply.rr.extend(self.rrs(owner, qtype, rrs[qtype]))
                break
            if "CNAME" not in rrs:
                break
            target = rrs["CNAME"] if isinstance(rrs["CNAME"], str) else rrs["CNAME"][0]
            reply.rr.extend(self.rrs(owner, "CNAME", target))
            owner, name = target, _norm(target)
        if not reply.rr or reply.header.rcode == RCODE.NXDOMAIN:
            # RFC 2308 §3: the SOA's minimum is the negative TTL.
            reply.add_auth(RR("test.", QTYPE.SOA, ttl=TTL,
                              rdata=SOA("ns.test.", "hostmaster.test.", (1, 3600, 600, 86400, TTL))))
        reply.header.aa = 1
        return reply


class _Handler(socketserver.BaseRequestHandler):
    server: Any

    def handle(self) -> None:
        zone: _Zone = self.server.zone
        if self.server.socket_type == socket.SOCK_STREAM:
            sock = self.request
            sock.settimeout(2.0)
            try:
                while True:
                    head = self._read(sock, 2)
                    if head is None:
                        return
                    data = self._read(sock, struct.unpack("!H", head)[0])
                    if data is None:
                        return
                    reply = zone.answer(DNSRecord.parse(data), "tcp")
                    if reply is None:
                        continue
                    packed = reply.pack()
                    sock.sendall(struct.pack("!H", len(packed)) + packed)
            except OSError:
                return
        data, sock = self.request
        try:
            request = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - garbage on the wire: ignore it, as a server would
            return
        reply = zone.answer(request, "udp")
        if reply is None:
            return
        packed = reply.pack()
        limit = 512
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                limit = max(512, rr.rclass)
        if len(packed) > limit:
            # RFC 1035 §4.2.1 / RFC 7766: keep the question, drop the records, set TC.
            short = request.reply()
            short.header.rcode = reply.header.rcode
            short.header.tc = 1
            packed = short.pack()
        sock.sendto(packed, self.client_address)

    @staticmethod
    def _read(sock: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf


class _UDP(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = False


class _TCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DNSTestServer:
    """An authoritative-looking server for the given records on 127.0.0.1, UDP and TCP on one port."""

    def __init__(self, records: Mapping[str, Mapping[str, Any]] | None = None, *,
                 servfail: Iterable[str] = (), drop: Iterable[str] = ()) -> None:
        self.zone = _Zone(records or {}, servfail, drop)
        self.host = "127.0.0.1"
        self.port = 0
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def queries(self) -> list[tuple[str, str, str]]:
        """Every (name, type, "udp"|"tcp") received, in order."""
        with self.zone.lock:
            return list(self.zone.queries)

    def start(self) -> DNSTestServer:
        for _ in range(20):
            udp = _UDP((self.host, 0), _Handler)
            port = udp.server_address[1]
            try:
                tcp = _TCP((self.host, port), _Handler)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP")
        self.port = port
        for server in (udp, tcp):
            server.zone = self.zone  # type: ignore[attr-defined]
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"dnstest-{port}", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> DNSTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
