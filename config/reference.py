"""Print the configuration reference (docs/configuration.md) from the settings' own documentation.

Run `python -m config.reference > docs/configuration.md` after adding a setting; a test checks that every
setting appears there.
"""

from __future__ import annotations

import json

from config.loader import ENV_PREFIX, iter_documented
from config.settings import DEV_PROFILE

HEADER = """# Configuration reference

Settings come from, in increasing priority: built-in defaults, the `--dev` profile (when given), the TOML
file (`--config FILE`, `$MAILSERVER_CONFIG`, or `/etc/mailserver/mailserver.toml` if it exists), and
environment variables `MAILSERVER_<SECTION>__<KEY>` (nested keys joined by `__`, e.g.
`MAILSERVER_SMTP__MX__PORT=2525`; values are read as TOML values when they parse, else as strings).

An unknown key, a wrong type or an out-of-range value stops the server with one line naming the key
(`smtp.mx.port: must be 0-65535`) and exit status 2. `mailserver config check FILE` validates a file
without starting anything, including that `server.data_dir` (if present) is a directory and that the TLS
certificate, key and `queue.tls_ca_file` load (`--no-files` skips these, to check a file on another
machine); `serve` also checks that every enabled listener's address and port can be bound.
`mailserver.example.toml` is a commented example (a test loads it).

| key | default | `--dev` | meaning |
|---|---|---|---|
"""


def _dev_value(key: str) -> str:
    node: object = DEV_PROFILE
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    return f"`{json.dumps(node)}`"


def render() -> str:
    """The whole reference as Markdown."""
    rows = []
    for key, default, doc in iter_documented():
        env = ENV_PREFIX + key.upper().replace(".", "__")
        rows.append(f"| `{key}` | `{json.dumps(default)}` | {_dev_value(key)} | {doc} (`{env}`) |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
