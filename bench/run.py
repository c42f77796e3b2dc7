"""The benchmark, one command: our server against Postfix and Dovecot, same machine, same run, as ratios.

    python bench/run.py --quick      # a few minutes: the development loop
    python bench/run.py              # the full matrix of issue 8

It (1) starts the reference servers (bench/setup_reference.sh: Debian's Postfix and Dovecot on loopback
ports 10025/10143), (2) starts the trivial sink and DNS stub (bench/sink.py, 10026/10053), (3) creates a
fresh database on the local PostgreSQL, the same accounts, and starts our server from this checkout on
ports of its own (MX 11025, submission 11587, IMAP 11143), (4) runs each workload against ours and theirs
back to back (alternating which goes first), and (5) prints a table of ours, theirs and ours/theirs, and
writes everything to bench/results/<time>.json. A workload whose server side is missing on this branch
(no listener, no outbound queue) is reported as skipped, not failed.

Everything is on loopback and bounded in time. Nothing here is a test: timings are never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

import imapbench  # noqa: E402
from ours import (  # noqa: E402
    DNS_STUB,
    DOMAIN,
    OURS_IMAP,
    OURS_MX,
    OURS_SUBMISSION,
    PASSWORD,
    SENDER,
    SINK,
    USERS,
    Ours,
    fill_ours,
    index_caught_up,
    top_message_id,
)
from probes import (  # noqa: E402
    PeakRSS,
    TreeCPU,
    backend_pids,
    child_pids,
    log,
    port_open,
    read_pid,
    stop_process,
    wait_port,
)
from reference import (  # noqa: E402
    DOVECOT_IMAP,
    DOVECOT_PID,
    POSTFIX_PID,
    POSTFIX_SMTP,
    drop_maildir,
    fill_maildir,
    reset_reference_mail,
)
from report import Row, print_table  # noqa: E402


@dataclass(frozen=True)
class Mode:
    name: str
    smtp_cells: list[tuple[int, int, int]]  # (size, connections, messages)
    imap_sizes: list[int]
    append_n: int
    outbound_n: int
    warm_reps: int
    smtp_reps: int = 1  # rounds of each SMTP cell, both sides each round; the table shows each side's median


QUICK = Mode("quick", [(2_000, 1, 300), (2_000, 50, 1500), (20_000, 50, 1000), (200_000, 10, 300)],
             [1_000, 10_000], 200, 300, 3, 1)
# Messages per cell: about one to two seconds of load per side and round. With fewer (75 of 200 KB on one
# connection until 2026-11-30: 0.2 s) one pause of the machine moved a round's figures by a third.
_FULL_MESSAGES = {1: 1000, 10: 2000, 50: 2000}
FULL = Mode("full", [(s, c, _FULL_MESSAGES[c] // (2 if s >= 200_000 else 1))
                     for s in (2_000, 20_000, 200_000) for c in (1, 10, 50)],
            [10_000, 100_000], 1_000, 2_000, 3, 3)


# --- workloads ------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, mode: Mode, args: argparse.Namespace, ours: Ours | None) -> None:
        self.mode, self.args, self.ours = mode, args, ours
        self.rows: list[Row] = []
        self.raw: dict[str, Any] = {"smtp": [], "imap": [], "append": [], "outbound": []}
        self.rss = PeakRSS(ours.proc.pid if ours and ours.proc else None)
        pid = ours.proc.pid if ours and ours.proc else None
        # ours: our process, its children (the search indexer's decoding process) and the PostgreSQL
        # backends of our database, each counted by its own delta
        self.cpu_ours = TreeCPU(None, extra=(lambda: [pid, *child_pids(pid), *backend_pids(ours.db_name)])
                                if ours and pid else None)
        self.cpu_postfix = TreeCPU(read_pid(POSTFIX_PID))
        self.cpu_dovecot = TreeCPU(read_pid(DOVECOT_PID))
        self.flip = False

    def order(self) -> list[str]:
        """Alternate who goes first, so neither side always runs on a machine the other just warmed."""
        self.flip = not self.flip
        return ["ours", "theirs"] if self.flip else ["theirs", "ours"]

    # SMTP inbound -------------------------------------------------------------------------------------
    def loadgen(self, port: int, size: int, conc: int, n: int, domain: str = DOMAIN,
                auth: str | None = None, sender: str = SENDER) -> dict[str, Any]:
        cmd = [sys.executable, str(BENCH / "loadgen.py"), "--port", str(port), "-n", str(n), "-c", str(conc),
               "--size", str(size), "--domain", domain, "--sender", sender, "--json",
               "--timeout", str(self.args.step_timeout)]
        if auth:
            cmd += ["--auth", auth]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.args.step_timeout + 60)
        except subprocess.TimeoutExpired:
            return {"sent": 0, "failed": n, "rate": 0.0, "seconds": 0.0, "errors": ["load generator timed out"]}
        if out.returncode != 0:
            return {"sent": 0, "failed": n, "rate": 0.0, "seconds": 0.0, "errors": [out.stderr[-400:]]}
        return json.loads(out.stdout)

    async def smtp_side(self, side: str, size: int, conc: int, n: int) -> dict[str, Any] | None:
        if side == "ours":
            if not (self.ours and self.ours.smtp):
                return None
            smtp_port, imap_port, cpu = OURS_MX, OURS_IMAP if self.ours.imap else None, self.cpu_ours
        else:
            smtp_port, imap_port, cpu = POSTFIX_SMTP, DOVECOT_IMAP, self.cpu_postfix
        poller = None
        if imap_port:
            try:
                poller = await imapbench.Poller.open("127.0.0.1", imap_port, USERS, PASSWORD)
                base = await poller.counts()
            except (OSError, imapbench.IMAPError) as e:
                log(f"{side}: cannot watch the mailboxes over IMAP: {e}")
                poller = None
        floor = await top_message_id(self.ours) if side == "ours" and self.ours.search_index else None
        if side == "ours":
            self.rss.reset()
        cpu.begin()
        res = await asyncio.to_thread(self.loadgen, smtp_port, size, conc, n)
        if poller:
            expected = {u: base[u] + res.get("per_rcpt", {}).get(u, 0) for u in USERS}
            try:
                wait = await poller.wait(expected, limit=self.args.step_timeout)
            except (OSError, imapbench.IMAPError) as e:
                res.setdefault("errors", []).append(f"watching over IMAP: {e}")
                wait = None
            res["fetchable_s"] = None if wait is None else res["seconds"] + wait
            await poller.close()
        if floor is not None:
            # Our indexer works after a burst (search.max_defer): its CPU is this workload's too, so the
            # reading waits for it to finish (and to merge the SEARCH indexes' pending lists).
            res["index_caught_up_s"] = await index_caught_up(self.ours, self.args.step_timeout, after_id=floor)
        res["cpu_s"] = await settled_cpu(cpu)
        res["cpu_ms_per_msg"] = 1000 * res["cpu_s"] / res["sent"] if res["sent"] else None
        if side == "ours":
            res["peak_rss_mb"] = self.rss.peak_mb()
        return res

    async def smtp_inbound(self) -> None:
        targets = {(2_000, 50): 2.0, (20_000, 50): 1.5, (20_000, 10): 1.5, (200_000, 10): 1.2,
                   (200_000, 50): 1.2}
        for size, conc, n in self.mode.smtp_cells:
            label = f"SMTP in {size // 1000}KB x{conc}"
            rounds: dict[str, list[dict[str, Any] | None]] = {"ours": [], "theirs": []}
            for rep in range(self.mode.smtp_reps):
                for side in self.order():
                    log(f"{label}: {side}" + (f" (round {rep + 1} of {self.mode.smtp_reps})" if rep else ""))
                    rounds[side].append(await self.smtp_side(side, size, conc, n))
            got = {side: _median_round(runs) for side, runs in rounds.items()}
            ceiling = await asyncio.to_thread(self.loadgen, SINK, size, conc, n)
            self.raw["smtp"].append({"size": size, "connections": conc, "messages": n, **got, "sink": ceiling})
            o, t = got.get("ours"), got["theirs"]
            target = 0.9 if conc == 1 else targets.get((size, conc))
            skipped = "" if o else "ours: no SMTP listener"
            self.rows.append(Row(f"{label} accept", "msg/s", True, o and o["rate"], t["rate"], target,
                                 skipped or _errors(ours=o, theirs=t)))
            self.rows.append(Row(f"{label} p50", "ms", False, o and o["p50_ms"], t["p50_ms"]))
            self.rows.append(Row(f"{label} p99", "ms", False, o and o["p99_ms"], t["p99_ms"],
                                 0.3 if conc == 50 else None))
            self.rows.append(Row(f"{label} CPU/msg", "ms", False, o and o["cpu_ms_per_msg"],
                                 t["cpu_ms_per_msg"], 0.8))
            why = ("" if o is None or o.get("fetchable_s") is not None else
                   "ours: no IMAP listener" if not (self.ours and self.ours.imap) else "ours: timed out")
            self.rows.append(Row(f"{label} until fetchable", "s", False, o and o.get("fetchable_s"),
                                 t.get("fetchable_s"), note=why))
            # the generator's ceiling: the sink's rate must be >= 3x ours (Postfix's while ours is absent)
            ref = o["rate"] if o and o["rate"] else t["rate"]
            self.rows.append(Row(f"{label} generator ceiling", "x", True, ceiling["rate"] / ref if ref else None,
                                 None, note=f"sink {ceiling['rate']:.0f} msg/s = {ceiling['rate'] / ref:.1f}x "
                                 f"{'ours' if o and o['rate'] else 'Postfix'}; loadgen "
                                 f"{ceiling['client_cpu']:.2f} cores" if ref else "no rate"))
            if o:
                self.rows.append(Row(f"{label} ours peak RSS", "MB", False, o.get("peak_rss_mb"), None))

    # IMAP ----------------------------------------------------------------------------------------------
    async def imap_sizes(self) -> None:
        for n in self.mode.imap_sizes:
            await self.imap_size(n)

    async def imap_size(self, n: int) -> None:
        user = f"box{n}@{DOMAIN}"
        have_ours = bool(self.ours and self.ours.imap)
        log(f"IMAP {n}: filling Dovecot's Maildir" + (" and ours" if have_ours else ""))
        fill_t = await asyncio.to_thread(fill_maildir, n)
        fill: dict[str, Any] = {"theirs_s": fill_t}
        if have_ours:
            assert self.ours is not None
            try:
                fill["ours_s"] = await fill_ours(self.ours, n)
            except Exception as e:  # the store changed under the bench: measure theirs, say why not ours
                log(f"IMAP {n}: filling ours failed: {type(e).__name__}: {e}")
                self.ours.notes.append(f"filling box{n} failed: {type(e).__name__}: {e}")
                have_ours = False
        log(f"IMAP {n}: filled ({', '.join(f'{k} {v:.1f}' for k, v in fill.items())})")
        ports = {"ours": OURS_IMAP, "theirs": DOVECOT_IMAP}
        sides = [s for s in ("ours", "theirs") if s == "theirs" or have_ours]
        res: dict[str, dict[str, Any]] = {s: {} for s in sides}
        timeout = self.args.step_timeout

        async def measure(name: str, op: Callable[[str], Awaitable[dict[str, Any]]]) -> None:
            for side in [s for s in self.order() if s in sides]:
                if side == "ours":
                    self.rss.reset()
                cpu = self.cpu_ours if side == "ours" else self.cpu_dovecot
                cpu.begin()
                try:
                    r = await asyncio.wait_for(op(side), timeout)
                except (TimeoutError, imapbench.IMAPError, OSError) as e:
                    r = {"error": f"{type(e).__name__}: {e}"[:200]}
                r["cpu_s"] = await settled_cpu(cpu)
                if side == "ours":
                    r["peak_rss_mb"] = self.rss.peak_mb()
                res[side][name] = r

        async def session(side: str) -> imapbench.Client:
            return await imapbench.Client.connect("127.0.0.1", ports[side], user, PASSWORD)

        async def cold(side: str) -> dict[str, Any]:
            c = await session(side)
            try:
                s = await imapbench.select(c)
                h = await imapbench.header_sync(c)
                return {"seconds": s["seconds"] + h["seconds"], "select_s": s["seconds"], "sync_s": h["seconds"],
                        "exists": s["exists"], "messages": h["messages"]}
            finally:
                await c.close()

        async def warm(side: str) -> dict[str, Any]:
            c = await session(side)
            try:
                runs = []
                for _ in range(self.mode.warm_reps):
                    s = await imapbench.select(c)
                    h = await imapbench.header_sync(c)
                    runs.append((s["seconds"], h["seconds"], h["messages"]))
                return {"select_s": statistics.median(r[0] for r in runs),
                        "seconds": statistics.median(r[1] for r in runs), "messages": runs[0][2], "runs": runs}
            finally:
                await c.close()

        async def with_selected(side: str, fn: Callable[[imapbench.Client], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
            c = await session(side)
            try:
                await imapbench.select(c)
                return await fn(c)
            finally:
                await c.close()

        async def bodies(side: str) -> dict[str, Any]:
            async def go(c: imapbench.Client) -> dict[str, Any]:
                return await imapbench.body_fetch(c, await imapbench.all_uids(c))
            return await with_selected(side, go)

        def conc(cmd: bytes) -> Callable[[str], Awaitable[dict[str, Any]]]:
            return lambda side: imapbench.concurrent(10, "127.0.0.1", ports[side], user, PASSWORD, cmd)

        log(f"IMAP {n}: first sync after delivery")
        await measure("cold", cold)
        if have_ours:
            assert self.ours is not None
            # the first sync above ran while the indexer worked through the burst (the worst case);
            # what follows is measured on an indexed store, as on a server whose indexer keeps pace
            caught = await index_caught_up(self.ours, timeout)
            fill["ours_index_after_first_sync_s"] = caught
            log(f"IMAP {n}: our full-text index caught up "
                + (f"{caught:.1f} s after the first sync" if caught is not None else "? (no index or timed out)"))
        log(f"IMAP {n}: warm sync, 10 clients, bodies, searches")
        await measure("warm", warm)
        await measure("sync_x10", conc(imapbench.HEADER_SYNC))
        await measure("body_fetch_100", bodies)
        await measure("search_header", lambda s: with_selected(s, lambda c: imapbench.search(c, "SUBJECT")))
        await measure("search_body", lambda s: with_selected(s, lambda c: imapbench.search(c, "BODY")))
        await measure("search_header_x10", conc(imapbench.search_command("SUBJECT")))
        await measure("search_body_x10", conc(imapbench.search_command("BODY")))
        self.raw["imap"].append({"messages": n, "fill": fill, **res})
        await asyncio.to_thread(drop_maildir, n)

        o, t = res.get("ours", {}), res["theirs"]
        k = f"{n // 1000}k"

        def add(name: str, key: str, field_: str = "seconds", target: float | None = None, unit: str = "ms",
                scale: float = 1000.0) -> None:
            ov, tv = o.get(key, {}).get(field_), t.get(key, {}).get(field_)
            err = o.get(key, {}).get("error") or t.get(key, {}).get("error") or ""
            self.rows.append(Row(f"IMAP {k}: {name}", unit, False, None if ov is None else ov * scale,
                                 None if tv is None else tv * scale, target,
                                 err or ("" if have_ours else "ours: no IMAP listener" if not (
                                     self.ours and self.ours.imap) else "ours: fill failed (see notes)")))

        for side, r in (("ours", o), ("theirs", t)):
            for key in ("cold", "warm"):
                got = r.get(key, {}).get("messages")
                if got is not None and got != n:
                    self.rows.append(Row(f"IMAP {k}: {side} {key} sync returned {got} of {n}", "count", True,
                                         got if side == "ours" else None, got if side == "theirs" else None,
                                         note="incomplete answer: its time is not comparable"))
        add("header sync, first after delivery", "cold", target=0.3)
        add("header sync, warm", "warm", target=1.0)
        add("SELECT, warm", "warm", "select_s")
        add(f"CPU of {self.mode.warm_reps} warm syncs (ours incl. PostgreSQL)", "warm", "cpu_s", unit="ms")
        add("header sync warm, 10 clients", "sync_x10")
        add("100 body fetches", "body_fetch_100")
        add("SEARCH SUBJECT", "search_header", target=0.5)
        add("SEARCH BODY", "search_body", target=0.25)
        add("SEARCH SUBJECT, 10 clients", "search_header_x10")
        add("SEARCH BODY, 10 clients", "search_body_x10")
        for key in ("search_header", "search_body"):
            om, tm = o.get(key, {}).get("matches"), t.get(key, {}).get("matches")
            if om is not None and om != tm:
                self.rows.append(Row(f"IMAP {k}: {key} matches differ", "count", True, om, tm,
                                     note="results disagree"))
        if have_ours and "ours_index_after_first_sync_s" in fill:
            self.rows.append(Row(f"IMAP {k}: ours full-text index caught up after first sync", "s", False,
                                 fill["ours_index_after_first_sync_s"], None,
                                 note="background indexer after the fill burst, pending lists merged; later rows ran indexed"))
        if have_ours:
            peaks = [v.get("peak_rss_mb") for v in o.values() if isinstance(v, dict) and v.get("peak_rss_mb")]
            self.rows.append(Row(f"IMAP {k}: ours peak RSS", "MB", False, max(peaks) if peaks else None, None))

    async def append(self) -> None:
        n = self.mode.append_n
        got: dict[str, Any] = {}
        for side in self.order():
            if side == "ours" and not (self.ours and self.ours.imap):
                continue
            port = OURS_IMAP if side == "ours" else DOVECOT_IMAP
            await settle_disk()
            log(f"APPEND x{n}: {side}")
            try:
                c = await imapbench.Client.connect("127.0.0.1", port, f"appender@{DOMAIN}", PASSWORD)
                got[side] = await asyncio.wait_for(imapbench.append(c, n), self.args.step_timeout)
                await c.close()
            except (TimeoutError, imapbench.IMAPError, OSError) as e:
                got[side] = {"error": str(e)[:200]}
        self.raw["append"].append(got)
        o, t = got.get("ours", {}), got.get("theirs", {})
        self.rows.append(Row("IMAP APPEND, 1 client", "msg/s", True, o.get("rate"), t.get("rate"), 2.0,
                             o.get("error") or t.get("error") or ("" if o else "ours: no IMAP listener")))

    # Outbound ------------------------------------------------------------------------------------------
    async def sink_count(self, reset: bool = False) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", SINK)
        await reader.readline()
        writer.write(b"XRESET\r\n" if reset else b"XCOUNT\r\n")
        line = await reader.readline()
        writer.write(b"QUIT\r\n")
        writer.close()
        return int(line.split()[1])

    async def outbound(self) -> None:
        n = self.mode.outbound_n
        got: dict[str, Any] = {}
        for side in self.order():
            if side == "ours" and not (self.ours and self.ours.outbound):
                continue
            await settle_disk()
            log(f"outbound x{n}: {side}")
            await self.sink_count(reset=True)
            cpu = self.cpu_ours if side == "ours" else self.cpu_postfix
            cpu.begin()
            if side == "ours":
                self.rss.reset()
            t0 = time.perf_counter()
            # submission: the authenticated user is the sender (ours checks that the sender is its own)
            user = f"u1@{DOMAIN}"
            if side == "ours":
                res = await asyncio.to_thread(self.loadgen, OURS_SUBMISSION, 2_000, 10, n, "remote.test",
                                              f"{user}:{PASSWORD}", user)
            else:
                res = await asyncio.to_thread(self.loadgen, POSTFIX_SMTP, 2_000, 10, n, "remote.test",
                                              None, user)
            deadline = time.perf_counter() + self.args.step_timeout
            count = last = 0
            moved = time.perf_counter()
            while time.perf_counter() < deadline and res["sent"]:
                count = await self.sink_count()
                if count >= res["sent"]:
                    break
                if count != last:
                    last, moved = count, time.perf_counter()
                elif time.perf_counter() - moved > 30:  # nothing arrived for 30 s: a queue that is not running
                    res.setdefault("errors", []).append(f"the sink got {count} of {res['sent']}; stalled 30 s")
                    break
                await asyncio.sleep(0.05)
            secs = time.perf_counter() - t0
            done = res["sent"] and count >= res["sent"]
            res.update(delivered=count, until_sink_s=secs if done else None,
                       rate_to_sink=count / secs if done else None, cpu_s=await settled_cpu(cpu))
            if side == "ours":
                res["peak_rss_mb"] = self.rss.peak_mb()
            got[side] = res
        self.raw["outbound"].append(got)
        o, t = got.get("ours"), got["theirs"]
        note = _errors(ours=o, theirs=t) if o else "ours: no outbound queue on this branch yet"
        self.rows.append(Row(f"Outbound 2KB x{n} to sink", "msg/s", True, o and o["rate_to_sink"],
                             t["rate_to_sink"], 1.0, note))
        self.rows.append(Row("Outbound submit accept", "msg/s", True, o and o["rate"], t["rate"]))


async def settle_disk() -> None:
    """Write back every dirty page before a workload whose rate hangs on fsync (APPEND, outbound): each
    fsync otherwise waits behind the writeback of whatever ran before (the 100,000-message fills:
    Dovecot's APPEND rate right after them was a third of its rate on a calm disk), and the side
    measured first would pay for it."""
    await asyncio.to_thread(os.sync)


async def settled_cpu(cpu: TreeCPU) -> float:
    """CPU of a workload, read once the daemons that served it have exited and been reaped.

    A Dovecot imap process ends at LOGOUT; until its master reaps it, its time is in neither the live
    children nor the master's children total, so reading at once can miss a whole session.
    """
    await asyncio.sleep(0.5)
    return cpu.seconds()


_MEDIAN_KEYS = ("rate", "p50_ms", "p99_ms", "cpu_ms_per_msg", "fetchable_s", "seconds")


def _median_round(runs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One side's rounds of an SMTP cell as one result: the median of each figure (on this shared machine
    a single round's CPU speed can swing by a third, and one slow round must not decide a ratio), the
    highest peak RSS, every failure and error; the rounds themselves are kept for the JSON."""
    done = [r for r in runs if r is not None]
    if not done:
        return None
    if len(done) == 1:
        return done[0]
    out: dict[str, Any] = {"rounds": done, "sent": sum(r.get("sent", 0) for r in done),
                           "failed": sum(r.get("failed", 0) for r in done),
                           "reconnects": sum(r.get("reconnects", 0) for r in done),
                           "errors": [e for r in done for e in r.get("errors", [])],
                           "per_rcpt": done[-1].get("per_rcpt", {})}
    for key in _MEDIAN_KEYS:
        values = [r[key] for r in done if r.get(key) is not None]
        out[key] = statistics.median(values) if len(values) == len(done) else None
    rss = [r["peak_rss_mb"] for r in done if r.get("peak_rss_mb") is not None]
    if rss:
        out["peak_rss_mb"] = max(rss)
    return out


def _errors(**results: dict[str, Any] | None) -> str:
    """What went wrong on either side, short enough for the table (the JSON has it all)."""
    out = []
    for side, r in results.items():
        if not r:
            continue
        if r.get("failed"):
            out.append(f"{side}: {r['failed']} failed")
        if r.get("reconnects"):
            out.append(f"{side}: {r['reconnects']} reconnects")
        errs = [e for e in r.get("errors", []) if not e.startswith("reconnected")] or r.get("errors", [])
        if errs:
            out.append(f"{side}: {errs[0]}")
    return "; ".join(out)[:140]


# --- main -----------------------------------------------------------------------------------------------

def git_rev() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def prepare(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """Before the event loop: the reference servers up, their bench mail emptied, the sink started."""
    if not args.no_setup:
        log("reference servers: bench/setup_reference.sh")
        subprocess.run(["bash", str(BENCH / "setup_reference.sh")], check=True, timeout=900,
                       stdin=subprocess.DEVNULL)
    reset_reference_mail()
    for port in (SINK, OURS_MX, OURS_SUBMISSION, OURS_IMAP):
        if port_open(port):
            raise SystemExit(f"port {port} is already in use; stop whatever holds it")
    sink = subprocess.Popen([sys.executable, str(BENCH / "sink.py"), "--port", str(SINK), "--dns-port",
                             str(DNS_STUB)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            start_new_session=True)
    if not wait_port(SINK, 10, sink):
        stop_process(sink, 5)
        raise SystemExit(f"the sink did not start on {SINK}")
    return sink


async def amain(args: argparse.Namespace, mode: Mode, workdir: Path) -> tuple[Bench, Ours | None]:
    only = set(args.only.split(",")) if args.only else {"smtp", "imap", "append", "outbound"}
    ours: Ours | None = None
    try:
        if not args.no_ours:
            ours = Ours(admin_dsn=args.pg, workdir=workdir, search_index=not args.no_search_index,
                        workers=args.workers, tcp=args.tcp)
            await ours.create()
            log(f"ours: fresh database and accounts at {ours.database}")
            await asyncio.to_thread(ours.start)
            for note in ours.notes:
                log(note)
        bench = Bench(mode, args, ours)
        if "smtp" in only:
            await bench.smtp_inbound()
        if "imap" in only:
            await bench.imap_sizes()
        if "append" in only:
            await bench.append()
        if "outbound" in only:
            await bench.outbound()
    finally:
        if ours:
            await asyncio.to_thread(ours.stop)
            if not args.keep_db:
                try:
                    await ours.drop()
                except Exception as e:  # report, but never hide the results over a cleanup failure
                    log(f"could not drop {ours.db_name}: {e}")
    return bench, ours


def report(bench: Bench, ours: Ours | None, mode: Mode, started: float, stamp: str) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    setup = ""
    if ours:
        per_cpu = f" (one process per CPU: {os.cpu_count()})" if ours.workers == 0 else ""
        setup = (("; ours WITHOUT its full-text indexer (--no-search-index)" if not ours.search_index else "")
                 + f"; ours with server.workers = {ours.workers}{per_cpu}, its database over "
                 + ("the Unix socket" if ours.over_socket else "TCP"))
    print(f"\n{mode.name} run of {git_rev() or 'this checkout'}, {os.cpu_count()} CPUs, load average at the end "
          f"{load}; ratio = ours/theirs, measured back to back in this run{setup}\n")
    table = print_table(bench.rows, "Postfix/Dovecot")
    for note in (ours.notes if ours else []):
        print("note:", note.splitlines()[0][:200])
    out = {
        "mode": mode.name, "started": started, "seconds": time.time() - started, "git": git_rev(),
        "loadavg_at_end": os.getloadavg(), "cpus": os.cpu_count(),
        "ours": {"smtp": ours.smtp, "imap": ours.imap, "outbound": ours.outbound, "notes": ours.notes,
                 "search_index": ours.search_index, "workers": ours.workers,
                 "database": ours.database}
        if ours else None,
        "rows": [{**dataclasses.asdict(r), "ratio": r.ratio, "met": r.met} for r in bench.rows],
        "raw": bench.raw, "table": table,
    }
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    path = results_dir / f"{stamp}-{mode.name}.json"
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nresults: {path}  ({time.time() - started:.0f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description="Benchmark our server against Postfix and Dovecot (issue 8).")
    p.add_argument("--quick", action="store_true", help="a subset that runs in a few minutes")
    p.add_argument("--only", help="comma list of smtp,imap,append,outbound")
    p.add_argument("--imap-sizes", help="comma list of mailbox sizes, e.g. 1000,10000")
    p.add_argument("--smtp-reps", type=int, help="rounds of each SMTP cell (full: 3, quick: 1); medians are shown")
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="an admin DSN on the local PostgreSQL; a fresh database is created next to it")
    p.add_argument("--no-setup", action="store_true", help="do not (re)run setup_reference.sh")
    p.add_argument("--no-ours", action="store_true", help="measure the reference servers only")
    p.add_argument("--no-search-index", action="store_true",
                   help="run our server without its background full-text indexer ([search] index = false), "
                        "to see what the index costs per message; SEARCH BODY then reads raw bodies")
    p.add_argument("--workers", type=int, default=1,
                   help="our server.workers: processes sharing the SMTP and IMAP ports (default 1; 0: one per "
                        "CPU)")
    p.add_argument("--tcp", action="store_true",
                   help="connect our server to PostgreSQL over TCP even when the --pg server's Unix socket "
                        "is on this machine (by default it uses the socket, as the embedded default does)")
    p.add_argument("--keep-db", action="store_true", help="keep our benchmark database afterwards")
    p.add_argument("--keep-workdir", action="store_true", help="keep our server's config, log and data dir")
    p.add_argument("--workdir", help="our server's working directory (default /var/tmp/bench-ours-<time>)")
    p.add_argument("--step-timeout", type=float, default=300.0, help="seconds allowed for any one step")
    args = p.parse_args()
    if os.geteuid() != 0:
        p.error("run as root: it installs and starts Postfix and Dovecot (see bench/README.md)")
    try:
        import psutil  # noqa: F401
    except ImportError:
        p.error("needs psutil: pip install psutil (see bench/README.md)")
    mode = QUICK if args.quick else FULL
    if args.imap_sizes:
        mode = dataclasses.replace(mode, imap_sizes=[int(x) for x in args.imap_sizes.split(",")])
    if args.smtp_reps:
        mode = dataclasses.replace(mode, smtp_reps=max(1, args.smtp_reps))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(args.workdir or f"/var/tmp/bench-ours-{stamp}")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    sink = prepare(args)
    try:
        bench, ours = asyncio.run(amain(args, mode, workdir))
    finally:
        stop_process(sink, 5)
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    report(bench, ours, mode, started, stamp)


if __name__ == "__main__":
    main()
