#!/usr/bin/env bash
# Stop the reference Postfix and Dovecot started by setup_reference.sh. Leaves packages and mail in place.
set -uo pipefail
BENCH_REF=${BENCH_REF:-/var/tmp/bench-ref}
if command -v postfix >/dev/null && postfix status >/dev/null 2>&1; then postfix stop; fi
if [ -f "$BENCH_REF/dovecot/dovecot.conf" ] && [ -f "$BENCH_REF/dovecot/run/master.pid" ]; then
    doveadm -c "$BENCH_REF/dovecot/dovecot.conf" stop 2>/dev/null \
        || kill "$(cat "$BENCH_REF/dovecot/run/master.pid")" 2>/dev/null || true
fi
echo "reference servers stopped"
