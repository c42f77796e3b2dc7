"""The reference servers' side of the benchmark: Postfix and Dovecot as bench/setup_reference.sh leaves them.

Filling a Dovecot mailbox writes Maildir files as Postfix's virtual(8) would (LF line ends, Return-Path and
Delivered-To on top, in new/, no size in the name), so Dovecot's first sync does the work it does after
real delivery. Its ports and paths are fixed by setup_reference.sh.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ours import DOMAIN, SENDER, USERS, fill_message

MAIL_ROOT = Path(os.environ.get("BENCH_MAIL", "/var/tmp/bench-mail"))
REF_DIR = Path(os.environ.get("BENCH_REF", "/var/tmp/bench-ref"))
POSTFIX_SMTP, DOVECOT_IMAP = 10025, 10143
POSTFIX_PID = Path("/var/spool/postfix/pid/master.pid")
DOVECOT_PID = REF_DIR / "dovecot" / "run" / "master.pid"


def fill_maildir(n: int) -> float:
    """Write n messages into box<n>'s Maildir as Postfix's virtual(8) would: LF lines, trace headers, new/."""
    import pwd

    t0 = time.perf_counter()
    pw = pwd.getpwnam("benchmail")
    home = MAIL_ROOT / DOMAIN / f"box{n}"
    shutil.rmtree(home, ignore_errors=True)
    for sub in ("cur", "new", "tmp"):
        (home / sub).mkdir(parents=True)
    for path in (home, home / "cur", home / "new", home / "tmp"):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    now = int(time.time())
    for i in range(n):
        raw = (f"Return-Path: <{SENDER}>\r\nDelivered-To: box{n}@{DOMAIN}\r\n").encode() + fill_message(n, i)
        name = home / "new" / f"{now}.V801I{i:x}M{i % 1000000:06d}.bench-ref"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, raw.replace(b"\r\n", b"\n"))
            os.fchown(fd, pw.pw_uid, pw.pw_gid)
        finally:
            os.close(fd)
    return time.perf_counter() - t0


def drop_maildir(n: int) -> None:
    """Remove box<n>'s Maildir (up to a gigabyte at 100,000 messages) once its workloads are done."""
    shutil.rmtree(MAIL_ROOT / DOMAIN / f"box{n}", ignore_errors=True)


def reset_reference_mail() -> None:
    """Empty the Maildirs the SMTP and APPEND workloads fill, so every run starts from the same state."""
    for user in [u.split("@")[0] for u in USERS] + ["appender"]:
        shutil.rmtree(MAIL_ROOT / DOMAIN / user, ignore_errors=True)


