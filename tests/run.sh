#!/usr/bin/env bash
# Install everything the tests need, start the services they use, and run them.
# Works as root (CI) or as a user with sudo, on Debian 12+ with Python 3.11+.
# MAILSERVER_TEST_DSN: a PostgreSQL to test against; unset, tests start a private embedded one.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian tools the tests drive as real clients.
declare -A tool_pkg=([swaks]=swaks [mbsync]=isync [neomutt]=neomutt [curl]=curl
                     [opendkim-testmsg]=opendkim-tools [redis-server]=redis-server
                     [haproxy]=haproxy)
missing=()
for tool in "${!tool_pkg[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${tool_pkg[$tool]}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# swaks only Recommends its TLS modules, which --no-install-recommends leaves out: the STARTTLS/465
# tests need them ("TLS not available: requires Net::SSLeay").
perl -MNet::SSLeay -MIO::Socket::SSL -e1 2>/dev/null || missing+=(libnet-ssleay-perl libio-socket-ssl-perl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Redis: tests of the shared rate limiter use 127.0.0.1:6379; start one if none answers.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[dev]'

.venv/bin/ruff check .
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
