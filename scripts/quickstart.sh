#!/usr/bin/env bash
# Install mailserver into ./.venv and run it on the embedded default (--dev): a private PostgreSQL in
# ./data, a demo domain and account, a self-signed certificate, unprivileged ports on 127.0.0.1.
# Works as root or as a user with sudo, on Debian 12+ with Python 3.11+.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e .
echo "Starting mailserver --dev: demo account demo@example.test / demo-password; Ctrl-C stops it."
exec .venv/bin/mailserver serve --dev "$@"
