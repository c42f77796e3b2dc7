"""Single-message APPENDs against a running IMAP server: rate, latency, and the CPU they cost per APPEND
in the processes given (ours: the server, or the PostgreSQL backends of its database, one side per run).

The APPEND row of bench/run.py gives the rate only; this says where an APPEND's time goes. Run it twice,
once with the server's pid and once with its backends' pids, to split our process from PostgreSQL:

    python bench/appendcpu.py --port 11143 -n 1000 --pids "$(pgrep -f 'mailserver serve')"
    python bench/appendcpu.py --port 11143 -n 1000 --pids "$(pgrep -f 'postgres: .*mailbench_' | xargs)"

Messages are APPENDed as bench/run.py sends them (LITERAL+ when offered), 4 KB each, to INBOX of
`--user` (default appender@bench.test, which the benchmark creates on both servers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from imapbench import Client, IMAPError  # noqa: E402
from messages import make_message  # noqa: E402
from probes import TreeCPU  # noqa: E402


async def run(a: argparse.Namespace) -> None:
    pids = [int(p) for p in a.pids.split()] if a.pids else []
    c = await Client.connect(a.host, a.port, a.user, a.password)
    msgs = [make_message(11, i, a.size, a.user) for i in range(50)]
    await c.capabilities()
    latencies = []
    cpu = TreeCPU(None, extra=lambda: pids)
    cpu.begin()
    t0 = time.perf_counter()
    for i in range(a.n):
        start = time.perf_counter()
        r = await c.append("INBOX", msgs[i % len(msgs)])
        latencies.append(time.perf_counter() - start)
        if not r.ok:
            raise IMAPError(f"APPEND {r.status!r}")
    wall, spent = time.perf_counter() - t0, cpu.seconds()
    await c.close()
    latencies.sort()
    print(f"{a.n / wall:.0f} APPENDs/s, p50 {1000 * latencies[a.n // 2]:.2f} ms, "
          f"p99 {1000 * latencies[int(a.n * 0.99)]:.2f} ms"
          + (f", CPU of pids {a.pids}: {1000 * spent / a.n:.3f} ms per APPEND" if pids else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", type=int, default=1000, help="APPENDs, one after another")
    p.add_argument("--size", type=int, default=4000, help="bytes per message")
    p.add_argument("--user", default="appender@bench.test")
    p.add_argument("--password", default="benchpass")
    p.add_argument("--pids", default="", help="space-separated pids whose CPU to count")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
