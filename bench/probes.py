"""Process plumbing and the probes the benchmark reads: ports, stopping what we started, CPU and peak memory.

CPU is counted per process tree (a master and the daemons it forks and reaps) or per listed process, as a
delta over one workload; peak memory is the kernel's high-water mark (VmHWM), reset before a workload.
Nothing here knows a mail protocol.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 15.0) -> None:
    """SIGTERM the process we started, then SIGKILL it if it outlives the grace period."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class TreeCPU:
    """CPU seconds spent by a process tree (the process, its live children, its reaped children), as deltas.

    For Postfix and Dovecot the root is their master, which reaps every daemon it forks, so the sum is
    every daemon's CPU. For ours it is our process plus the PostgreSQL backends serving our database.
    """

    def __init__(self, root: int | None, extra: Callable[[], list[int]] | None = None) -> None:
        self.root, self.extra = root, extra
        self.start: dict[int, float] = {}

    @staticmethod
    def _cpu(pid: int, with_children: bool) -> float:
        import psutil

        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.Error, OSError):
            return 0.0
        return t.user + t.system + ((t.children_user + t.children_system) if with_children else 0.0)

    def _sample(self) -> dict[int, float]:
        import psutil

        out: dict[int, float] = {}
        if self.root:
            out[self.root] = self._cpu(self.root, True)
            try:
                for child in psutil.Process(self.root).children():
                    out[child.pid] = self._cpu(child.pid, True)
            except psutil.Error:
                pass
        for pid in self.extra() if self.extra else []:
            out[pid] = self._cpu(pid, False)
        return out

    def begin(self) -> None:
        self.start = self._sample()

    def seconds(self) -> float:
        end = self._sample()
        if self.root and self.extra is None:
            # a tree: reaped children moved into the root's children_* time, so totals are comparable
            return sum(end.values()) - sum(self.start.values())
        return sum(v - self.start.get(pid, 0.0) for pid, v in end.items())


def child_pids(pid: int) -> list[int]:
    """The live descendants of a process (ours: the search indexer's decoding process)."""
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def backend_pids(db_name: str) -> list[int]:
    """The PostgreSQL backends serving one database (their CPU is part of ours), by their process title."""
    import psutil

    needle = f" {db_name} "
    pids = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if p.info["name"] in ("postgres", "postmaster") and needle in " ".join(p.info["cmdline"] or []) + " ":
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


class PeakRSS:
    """Peak resident memory of a process and its children over a workload, summed: reset each one's
    high-water mark, read them back (a child started during the workload counts from its start)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def _pids(self) -> list[int]:
        return [self.pid, *child_pids(self.pid)] if self.pid else []

    def reset(self) -> None:
        for pid in self._pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def peak_mb(self) -> float | None:
        if not self.pid:
            return None
        total = 0
        for pid in self._pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return round(total / 1024, 1) if total else None


