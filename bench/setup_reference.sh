#!/usr/bin/env bash
# Install and start the reference servers for the benchmark: Postfix (SMTP in, Maildir delivery, relay to the
# bench sink) and Dovecot (IMAP on the same Maildir), from Debian's packages.
#
# Loopback only, non-standard ports only:
#   Postfix smtpd     127.0.0.1:10025   (nothing on 25/465/587: master.cf is written by this script)
#   Dovecot IMAP      127.0.0.1:10143   (no imaps, no pop3, no lmtp listener on a TCP port)
#   the bench sink    127.0.0.1:10026   (bench/sink.py, started by bench/run.py; Postfix relays remote.test there)
# Mail for u1..u50@bench.test and the IMAP fill accounts lives in Maildirs under $BENCH_MAIL.
# No systemd is assumed: daemons are started directly (`postfix start`, `dovecot -c`). Idempotent.
set -euo pipefail

BENCH_REF=${BENCH_REF:-/var/tmp/bench-ref}      # configs, logs, Dovecot's run directory
BENCH_MAIL=${BENCH_MAIL:-/var/tmp/bench-mail}   # the Maildirs
PASSWORD=${BENCH_PASSWORD:-benchpass}
SMTP_PORT=10025
IMAP_PORT=10143
SINK_PORT=${BENCH_SINK_PORT:-10026}
USERS="$(seq -f 'u%g' 1 50) box1000 box10000 box100000 appender"

[ "$(id -u)" = 0 ] || { echo "setup_reference.sh: run as root (it installs Debian packages)" >&2; exit 2; }

# --- packages ---------------------------------------------------------------------------------------------
if ! command -v postfix >/dev/null || ! command -v dovecot >/dev/null || ! dpkg -s dovecot-imapd >/dev/null 2>&1; then
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string bench-ref.localhost" | debconf-set-selections
    # Keep the package scripts from starting the default instances (which would bind 25, 143, 993):
    # policy-rc.d answering 101 is Debian's documented way to forbid invoke-rc.d starts.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    trap '[ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix dovecot-imapd >/dev/null
fi

# --- the mail owner ---------------------------------------------------------------------------------------
id benchmail >/dev/null 2>&1 || useradd --system --no-create-home --home-dir "$BENCH_MAIL" \
    --shell /usr/sbin/nologin benchmail
VUID=$(id -u benchmail); VGID=$(id -g benchmail)
mkdir -p "$BENCH_REF" "$BENCH_MAIL/bench.test"
chown -R benchmail:benchmail "$BENCH_MAIL"

# --- Postfix ----------------------------------------------------------------------------------------------
# Stop a running instance first so the new master.cf never coexists with an old listener.
postfix status >/dev/null 2>&1 && postfix stop >/dev/null 2>&1 || true
# This Postfix exists for the bench: its main.cf and master.cf are ours. Keep the package's originals once.
for f in main.cf master.cf; do
    if [ -f "/etc/postfix/$f" ] && ! grep -q "bench/setup_reference.sh" "/etc/postfix/$f" && [ ! -f "/etc/postfix/$f.bench-orig" ]; then
        cp -p "/etc/postfix/$f" "/etc/postfix/$f.bench-orig"
    fi
done
for u in $USERS; do echo "$u@bench.test bench.test/$u/"; done > /etc/postfix/bench_vmailbox
echo "remote.test smtp:[127.0.0.1]:$SINK_PORT" > /etc/postfix/bench_transport

cat > /etc/postfix/main.cf <<CF
# Written by bench/setup_reference.sh: a loopback-only Postfix for the mailserver benchmark.
compatibility_level = 3.6
myhostname = bench-ref.localhost
mydomain = localhost
myorigin = \$myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_transport = error:no local delivery on the bench instance
biff = no
append_dot_mydomain = no
smtpd_banner = \$myhostname ESMTP
smtpd_tls_security_level = none
smtp_tls_security_level = none
message_size_limit = 52428800
virtual_mailbox_limit = 0
maillog_file = $BENCH_REF/postfix.log
# Final delivery to Maildir (the trailing / in bench_vmailbox selects Maildir); fsync as shipped.
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $BENCH_MAIL
virtual_mailbox_maps = hash:/etc/postfix/bench_vmailbox
virtual_minimum_uid = 100
virtual_uid_maps = static:$VUID
virtual_gid_maps = static:$VGID
# remote.test goes to the bench sink, never to DNS.
transport_maps = hash:/etc/postfix/bench_transport
smtp_host_lookup = native
disable_dns_lookups = yes
CF

# Only the services Postfix needs; the one inet service is on 127.0.0.1:$SMTP_PORT. No chroot.
cat > /etc/postfix/master.cf <<CF
# Written by bench/setup_reference.sh.
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
local      unix  - n n -    - local
virtual    unix  - n n -    - virtual
lmtp       unix  - - n -    - lmtp
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
CF
postmap /etc/postfix/bench_vmailbox /etc/postfix/bench_transport
postfix check
postfix start </dev/null >/dev/null 2>&1

# --- Dovecot ----------------------------------------------------------------------------------------------
DC="$BENCH_REF/dovecot"
mkdir -p "$DC"
for u in $USERS; do
    echo "$u@bench.test:{PLAIN}$PASSWORD:$VUID:$VGID::$BENCH_MAIL/bench.test/$u::"
done > "$DC/passwd"
chmod 640 "$DC/passwd"; chgrp dovecot "$DC/passwd"
cat > "$DC/dovecot.conf" <<CF
# Written by bench/setup_reference.sh: IMAP only, plaintext, on 127.0.0.1:$IMAP_PORT.
instance_name = bench-dovecot
base_dir = $DC/run
state_dir = $DC/state
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = $BENCH_REF/dovecot.log
mail_location = maildir:~/
first_valid_uid = 100
default_internal_user = dovecot
default_login_user = dovenull
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DC/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%u $DC/passwd
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
CF
mkdir -p "$DC/state"
if [ -f "$DC/run/master.pid" ] && kill -0 "$(cat "$DC/run/master.pid")" 2>/dev/null; then
    dovecot -c "$DC/dovecot.conf" reload </dev/null >/dev/null 2>&1
else
    # Daemons must not keep our stdout open (a caller piping this script would wait forever).
    dovecot -c "$DC/dovecot.conf" </dev/null >/dev/null 2>&1
fi

# --- check: listening where we said, and nowhere standard ------------------------------------------------
for i in $(seq 1 50); do
    ss -ltn "sport = :$SMTP_PORT" | grep -q LISTEN && ss -ltn "sport = :$IMAP_PORT" | grep -q LISTEN && break
    sleep 0.1
done
ss -ltn "sport = :$SMTP_PORT" | grep -q "127.0.0.1:$SMTP_PORT" || { echo "postfix is not listening on $SMTP_PORT" >&2; exit 1; }
ss -ltn "sport = :$IMAP_PORT" | grep -q "127.0.0.1:$IMAP_PORT" || { echo "dovecot is not listening on $IMAP_PORT" >&2; exit 1; }
bad=$(ss -ltnp | grep -E '"(master|dovecot|imap-login|smtpd)"' | grep -vE "127\.0\.0\.1:($SMTP_PORT|$IMAP_PORT) " || true)
if [ -n "$bad" ]; then echo "unexpected reference listeners:" >&2; echo "$bad" >&2; exit 1; fi
echo "reference servers up: postfix 127.0.0.1:$SMTP_PORT, dovecot 127.0.0.1:$IMAP_PORT, mail in $BENCH_MAIL"
