"""CPU per message of the byte work of the MX path that grows with the message: the DATA reader
(`smtp_in.dataread.DataReader`: end of data, unstuffing, the bare CR/LF, NUL and line-length checks)
fed the dot-stuffed wire form in 64 KB reads as the session reads it, the MIME walk
(`mailcore.mime.structure.walk`) and the whole precomputed summary built on it
(`mailcore.mime.precompute.summarize`: part list, ENVELOPE, BODYSTRUCTURE, header-sync fields).
Sans-I/O, in process: binds no port, needs no database.

    python bench/datacpu.py [--sizes 2000,20000,200000] [--runs 5]

Prints, per size, the best over the runs of the microseconds per message (process CPU time), for the
benchmark's own messages (`bench/messages.py`). The best, not the mean: on a shared machine other
tenants only ever add time.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import dot_stuff  # noqa: E402
from messages import make_message  # noqa: E402

from mailcore.mime.precompute import summarize  # noqa: E402
from mailcore.mime.structure import walk  # noqa: E402
from smtp_in.dataread import DataReader  # noqa: E402
from smtp_in.spool import Spool  # noqa: E402

READ = 64 * 1024  # smtp_in.session.READ_CHUNK


def _read(chunks: list[bytes], size: int) -> None:
    """One message through the reader, as the session feeds it."""
    spool = Spool(1 << 26)
    reader = DataReader(spool, 1 << 26)
    for chunk in chunks:
        if reader.feed(chunk):
            break
    if not reader.done or spool.size != size:
        raise AssertionError("the reader did not give the message back")


def _best(work: Callable[[], None], count: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        for _ in range(count):
            work()
        best = min(best, (time.process_time() - start) * 1e6 / count)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2000,20000,200000")
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    print(f"{'size':>7}  {'DATA reader us/msg':>18}  {'MIME walk us/msg':>16}  {'summarize us/msg':>16}")
    for size in (int(x) for x in a.sizes.split(",")):
        raw = make_message(1, 3, size, "u1@bench.test", "sender@example.org")
        raw = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
        wire = dot_stuff(raw)
        chunks = [wire[i:i + READ] for i in range(0, len(wire), READ)]
        count = max(20, 2_000_000 // size)
        read = _best(functools.partial(_read, chunks, len(raw)), count, a.runs)
        walked = _best(functools.partial(walk, raw), count, a.runs)
        summarized = _best(functools.partial(summarize, raw), count, a.runs)
        print(f"{size:>7}  {read:>18.1f}  {walked:>16.1f}  {summarized:>16.1f}")


if __name__ == "__main__":
    main()
