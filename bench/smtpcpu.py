"""Where an inbound SMTP message's CPU goes on a running server: a bench/loadgen.py run, and the CPU per
message of our server process, its children (the search indexer's decoding process) and the PostgreSQL
backends of its database, each on its own line.

bench/run.py gives our CPU per message as one figure; this splits it, for one size and concurrency at a
time, against a server that is up (after `bench/run.py --keep-db --keep-workdir`, with bench/sink.py
answering DNS on 10053):

    python bench/smtpcpu.py --pid "$(pgrep -f 'mailserver serve' | head -1)" --db mailbench_... \\
        -- --port 11025 -n 2000 -c 10 --size 20000 --domain bench.test

Everything after `--` goes to loadgen.py. Processes that start during the run (a pool's new backend, the
decoding process at the indexer's first batch) count from their start; PostgreSQL's shared processes (WAL
writer, checkpointer) are not counted, as in run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probes import TreeCPU, backend_pids, child_pids  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pid", type=int, required=True, help="our `mailserver serve` process")
    p.add_argument("--db", required=True, help="its database's name (mailbench_<...>)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds to keep counting after the load ends: the indexer's tail (default 2)")
    p.add_argument("loadgen", nargs=argparse.REMAINDER, help="-- then loadgen.py's arguments")
    a = p.parse_args()
    args = a.loadgen[1:] if a.loadgen[:1] == ["--"] else a.loadgen
    # each group sampled by pid before and after: a process that starts during the run counts from 0
    groups = {"server": TreeCPU(None, extra=lambda: [a.pid]),
              "children": TreeCPU(None, extra=lambda: child_pids(a.pid)),
              "postgres": TreeCPU(None, extra=lambda: backend_pids(a.db))}
    for group in groups.values():
        group.begin()
    out = subprocess.run([sys.executable, os.path.join(HERE, "loadgen.py"), *args, "--json"],
                         capture_output=True, text=True, check=True)
    time.sleep(a.settle)
    spent = {name: group.seconds() for name, group in groups.items()}
    result = json.loads(out.stdout)
    n = max(result["sent"], 1)
    print(f"{result['sent']} sent ({result['failed']} failed), {result['rate']:.0f} msg/s, p50 {result['p50_ms']:.2f} ms")
    for name, seconds in spent.items():
        print(f"  {name:9s} {1000 * seconds / n:.3f} ms CPU per message")
    print(f"  {'total':9s} {1000 * sum(spent.values()) / n:.3f} ms CPU per message")


if __name__ == "__main__":
    main()
