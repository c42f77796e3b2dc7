"""A trivial SMTP sink and a stub DNS server, for the benchmark, on loopback only.

The sink answers 250 to everything, 354 to DATA, reads DATA in chunks and counts messages; it advertises
PIPELINING and answers pipelined commands in one write. It is the ceiling the load generator is measured
against (it must reach several times the rate of the servers under test) and the "remote domain" of the
outbound workload. `XCOUNT` answers `250 <messages received>`, `XRESET` sets the count to 0.

The DNS stub answers NXDOMAIN to every query at once, so a server under test that checks SPF or DMARC
on the bench's senders gets a quick "none" instead of a time-out (there is no network here). Like a real
authoritative server it puts the zone's SOA in the authority section (RFC 2308 §3), so a resolver may cache
the negative answer for the SOA's minimum TTL, as it would on the Internet.

    python bench/sink.py --port 10026 [--dns-port 10053]
"""

from __future__ import annotations

import argparse
import asyncio
import struct

EHLO_REPLY = (b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 104857600\r\n"
              b"250 ENHANCEDSTATUSCODES\r\n")


class Counter:
    messages = 0
    bytes = 0


class SinkProtocol(asyncio.Protocol):
    """One SMTP connection: commands are lines; after DATA, bytes until CRLF.CRLF."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.in_data = False
        self.transport.write(b"220 sink.test ESMTP bench sink\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        out: list[bytes] = []
        pos = 0
        while True:
            if self.in_data:
                # The body starts right after "DATA\r\n", so an empty body is ".\r\n" at pos.
                if buf.startswith(b".\r\n", pos):
                    end = pos
                else:
                    end = buf.find(b"\r\n.\r\n", pos)
                    if end < 0:
                        # keep the last 4 bytes: the terminator may straddle two reads
                        keep = max(pos, len(buf) - 4)
                        Counter.bytes += keep - pos
                        pos = keep
                        break
                    end += 2
                Counter.bytes += end - pos
                Counter.messages += 1
                pos = end + 3
                self.in_data = False
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            line = buf[pos:eol]
            pos = eol + 2
            verb = line[:4].upper()
            if verb in (b"EHLO", b"LHLO"):
                out.append(EHLO_REPLY)
            elif verb == b"DATA":
                out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.in_data = True
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
                self.transport.write(b"".join(out))  # type: ignore[attr-defined]
                self.transport.close()
                return
            elif line.upper() == b"XCOUNT":
                out.append(b"250 %d\r\n" % Counter.messages)
            elif line.upper() == b"XRESET":
                Counter.messages = Counter.bytes = 0
                out.append(b"250 0\r\n")
            else:
                out.append(b"250 2.0.0 Ok\r\n")
        self.buf = buf[pos:]
        if out:
            self.transport.write(b"".join(out))  # type: ignore[attr-defined]


# RFC 2308 §3: ". 300 IN SOA . . 1 3600 600 86400 300": owner ".", empty MNAME and RNAME, TTL and
# MINIMUM 300 s, so a negative answer may be cached for five minutes.
ROOT_SOA = (b"\0" + struct.pack("!HHIH", 6, 1, 300, 22) + b"\0\0"
            + struct.pack("!IIIII", 1, 3600, 600, 86400, 300))


class DNSStub(asyncio.DatagramProtocol):
    """Answer every query with NXDOMAIN (RCODE 3), echoing the question, with the root's SOA."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        ident, flags, qd = struct.unpack("!HHH", data[:6])
        # the question section: labels up to the zero byte, then QTYPE and QCLASS
        end = data.find(b"\0", 12)
        if end < 0 or qd != 1:
            return
        question = data[12:end + 5]
        rd = flags & 0x0100
        header = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | rd | 0x0080 | 3, 1, 0, 1, 0)
        self.transport.sendto(header + question + ROOT_SOA, addr)  # type: ignore[attr-defined]


async def serve(host: str, port: int, dns_port: int | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, host, port, backlog=1024, reuse_address=True)
    if dns_port:
        await loop.create_datagram_endpoint(DNSStub, local_addr=(host, dns_port))
    print(f"sink listening on {host}:{port}" + (f", dns stub on {host}:{dns_port}" if dns_port else ""),
          flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=10026)
    p.add_argument("--dns-port", type=int, default=0)
    a = p.parse_args()
    if not a.host.startswith("127.") and a.host != "::1":
        p.error("the sink listens on loopback only")
    asyncio.run(serve(a.host, a.port, a.dns_port or None))


if __name__ == "__main__":
    main()
