"""One HTTPS request to another domain's web server: MTA-STS policy files (`smtp_out.mtasts`) and TLS-RPT
reports (`smtp_out.tlsreports`) are fetched and posted the same way.

The host's address comes from the shared resolver (A, then AAAA), the certificate is verified (with
`queue.tls_ca_file` when set), HTTP/1.1 is written and read with h11 (the API's HTTP parser), one
connection per request, no redirects followed, and the answer's body is bounded. The caller bounds the
time (`asyncio.timeout`) and judges the answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import h11

from mailcore.dns import DNSLookup, DNSNotFound
from smtp_out.client import tls_context


class HTTPSError(Exception):
    """No address for the host, an answer over its bound, or a connection closed before any answer."""


@dataclass(frozen=True)
class Answer:
    """What came back: the status, the Content-Type without parameters (lower case), and the body (empty
    when the caller asked for none)."""

    status: int
    content_type: bytes
    body: bytes


async def host_address(dns: DNSLookup, host: str) -> str:
    """The first address of `host`: IPv4 first, then IPv6; HTTPSError when it has neither."""
    for lookup in (dns.a, dns.aaaa):
        try:
            return (await lookup(host))[0]
        except DNSNotFound:
            continue
    raise HTTPSError(f"{host} has no address")


async def request(dns: DNSLookup, host: str, port: int, method: str, target: str, *, ca_file: str,
                  user_agent: str, body_limit: int | None, headers: list[tuple[str, str]] | None = None,
                  body: bytes = b"", authority: str | None = None) -> Answer:
    """Send one request to `host` and read the answer. `body_limit`: the most body bytes read, beyond
    which HTTPSError; None reads no body (the status is what counts). `authority`: the Host field (the
    host name by default). Raises OSError, ssl errors, DNSTempError, h11.ProtocolError or HTTPSError as
    they come."""
    address = await host_address(dns, host)
    tls = await tls_context(True, ca_file)
    reader, writer = await asyncio.open_connection(address, port, ssl=tls, server_hostname=host)
    try:
        return await _exchange(reader, writer, method, target, [
            ("Host", authority or host), ("User-Agent", user_agent),
            *(headers or []), ("Connection", "close")], body, body_limit)
    finally:
        writer.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, target: str,
                    headers: list[tuple[str, str]], body: bytes, body_limit: int | None) -> Answer:
    conn = h11.Connection(h11.CLIENT)
    if body:
        headers = [*headers, ("Content-Length", str(len(body)))]
    writer.write(conn.send(h11.Request(method=method, target=target, headers=headers)))
    if body:
        writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    response: h11.Response | None = None
    received = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(16384))
        elif isinstance(event, h11.Response):
            response = event
            if body_limit is None:
                break
        elif isinstance(event, h11.Data):
            received += event.data
            if body_limit is not None and len(received) > body_limit:
                raise HTTPSError(f"{target}: answer larger than {body_limit} bytes")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if response is None:
        raise HTTPSError(f"{target}: closed without an answer")
    ctype = dict(response.headers).get(b"content-type", b"").split(b";")[0].strip().lower()
    return Answer(response.status_code, ctype, bytes(received))
