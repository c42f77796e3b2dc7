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

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))


def groups(pid: int, db: str) -> dict[str, list[psutil.Process]]:
    """Our server, its children, and the backends whose process title names `db`."""
    ours = psutil.Process(pid)
    backends = [p for p in psutil.process_iter(["name", "cmdline"])
                if p.info["name"] in ("postgres", "postmaster") and f" {db} " in " ".join(p.info["cmdline"] or []) + " "]
    return {"server": [ours], "children": ours.children(recursive=True), "postgres": backends}


def cpu(processes: list[psutil.Process]) -> dict[int, float]:
    """User and system CPU seconds so far, by pid (ended processes left out)."""
    out = {}
    for p in processes:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = t.user + t.system
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pid", type=int, required=True, help="our `mailserver serve` process")
    p.add_argument("--db", required=True, help="its database's name (mailbench_<...>)")
    p.add_argument("loadgen", nargs=argparse.REMAINDER, help="-- then loadgen.py's arguments")
    a = p.parse_args()
    args = a.loadgen[1:] if a.loadgen[:1] == ["--"] else a.loadgen
    before = {name: cpu(ps) for name, ps in groups(a.pid, a.db).items()}
    out = subprocess.run([sys.executable, os.path.join(HERE, "loadgen.py"), *args, "--json"],
                         capture_output=True, text=True, check=True)
    spent = {name: sum(now - before[name].get(pid, 0.0) for pid, now in cpu(ps).items())
             for name, ps in groups(a.pid, a.db).items()}
    result = json.loads(out.stdout)
    n = max(result["sent"], 1)
    print(f"{result['sent']} sent ({result['failed']} failed), {result['rate']:.0f} msg/s, p50 {result['p50_ms']:.2f} ms")
    for name, seconds in spent.items():
        print(f"  {name:9s} {1000 * seconds / n:.3f} ms CPU per message")
    print(f"  {'total':9s} {1000 * sum(spent.values()) / n:.3f} ms CPU per message")


if __name__ == "__main__":
    main()
