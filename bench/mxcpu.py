"""CPU per message of the MX end-of-data path, in process: what `smtp_in.transaction.deliver` does
before PostgreSQL sees the message (Received, the sender checks' DKIM/ARC/DMARC and
Authentication-Results, forged-results removal, `summarize`, `message_values`).

Safe on a shared machine: it binds no port but one ephemeral UDP port on loopback for the DNS stub
(every answer NXDOMAIN, as `bench/sink.py` gives the full benchmark, cached after the first message),
and the store is a stand-in connection whose `fetchrow` answers at once, so the figures are the
server's own CPU without the database. Messages are the full benchmark's (`bench/messages.py`).

    python bench/mxcpu.py [--size 2000] [--messages 2000] [--runs 5] [--profile out.txt]

Prints the best and median ms per message over the runs (process CPU time and wall time).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from messages import make_message  # noqa: E402
from sink import DNSStub  # noqa: E402

from config.settings import AuthPolicySettings, DNSSettings  # noqa: E402
from mailcore.address import parse_address  # noqa: E402
from mailcore.auth.dmarc import OrganizationalDomains  # noqa: E402
from mailcore.dns.resolver import Resolver  # noqa: E402
from smtp_in.senderauth import SenderAuthentication  # noqa: E402
from smtp_in.spool import Spool  # noqa: E402
from smtp_in.transaction import Origin, Recipient, Transaction, deliver  # noqa: E402

SENDER = "sender@example.org"
RCPT = "user@local.example"


class _Store:
    """Stands in for the pool: the one-message statement's row, at once (the database is not measured)."""

    async def fetchrow(self, *args: Any) -> dict[str, int]:
        return {"message_id": 1, "mailbox_id": 1, "uid": 1}


async def _one(store: Any, auth: SenderAuthentication, origin: Origin, body: bytes, n: int) -> None:
    tx = Transaction(sender=parse_address(SENDER), started=True)
    # an account the routing knows to have no quota, as the bench's are: the one-message statement
    tx.recipients.append(Recipient(RCPT, [(1, RCPT)], [], unlimited=frozenset({1})))
    tx.sender_check = auth.start_spf(origin.peer_ip, origin.helo, SENDER)
    spool = Spool(1 << 20)
    spool.write(body)
    await deliver(store, tx, origin, spool, f"{n:016x}", [auth])


async def main(size: int, count: int, runs: int) -> list[tuple[float, float]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(DNSStub, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    resolver = Resolver(DNSSettings(nameservers=["127.0.0.1"], port=port, timeout=1.0))
    auth = SenderAuthentication(resolver, "mx.local.example", AuthPolicySettings(enforce=False),
                                dns_timeout=1.0, org=OrganizationalDomains())
    origin = Origin(listener="mx", submission=False, peer_ip="127.0.0.1", helo="client.example.org", esmtp=True,
                    hostname="mx.local.example", tls_version=None, tls_cipher=None, account_id=None, login=None)
    bodies = [make_message(1, i, size, RCPT, SENDER) for i in range(count)]
    store = _Store()
    await _one(store, auth, origin, bodies[0], 0)  # warm: DNS answers cached, PSL loaded
    results = []
    for _ in range(runs):
        cpu, wall = time.process_time(), time.perf_counter()
        for i, body in enumerate(bodies):
            await _one(store, auth, origin, body, i)
        results.append(((time.process_time() - cpu) * 1000 / count, (time.perf_counter() - wall) * 1000 / count))
    transport.close()
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=2000)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    res = asyncio.run(main(a.size, a.messages, a.runs))
    cpu = [c for c, _ in res]
    wall = [w for _, w in res]
    print(f"size {a.size}: cpu ms/msg best {min(cpu):.4f} median {statistics.median(cpu):.4f}; "
          f"wall best {min(wall):.4f} median {statistics.median(wall):.4f}")
