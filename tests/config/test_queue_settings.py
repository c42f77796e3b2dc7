"""The queue's settings through the loader: the table-of-strings type and the transport URL checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.loader import ConfigError, iter_documented, load_settings


def _load(tmp_path: Path, text: str):
    path = tmp_path / "m.toml"
    path.write_text(text)
    return load_settings(path)


def test_transports_table_is_read(tmp_path: Path) -> None:
    s = _load(tmp_path, '[queue.transports]\n"example.test" = "smtp://127.0.0.1:2525"\n'
                        '"*" = "smtps://user:pw@relay.example:465"\n')
    assert s.queue.transports == {"example.test": "smtp://127.0.0.1:2525",
                                  "*": "smtps://user:pw@relay.example:465"}


def test_environment_adds_to_the_file_table(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[queue.transports]\n"a.example" = "smtp://h.example"\n')
    s = load_settings(path, environ={"MAILSERVER_QUEUE__TRANSPORTS__B": "smtp://g.example:26"})
    assert s.queue.transports == {"a.example": "smtp://h.example", "b": "smtp://g.example:26"}


@pytest.mark.parametrize(("toml", "problem"), [
    ('[queue]\ntransports = "smtp://x.example"', "queue.transports: must be a table of str"),
    ('[queue.transports]\n"a.example" = 25', "queue.transports.a.example: must be a string"),
    ('[queue.transports]\n"a.example" = "http://x.example"', "scheme must be one of"),
    ('[queue.transports]\n"a.example" = "smtp://u:p@x.example"', "never AUTH in clear"),
    ('[queue.transports]\n"a.example" = "smtp://x.example/path"', "nothing after"),
    ('[queue.transports]\n"a.example" = "smtp://x.example:0"', "port must be 1-65535"),
    ('[queue.transports]\n"a.example" = "smtp://x.example:99999"', "must be a URL"),
    ('[queue.transports]\n"bad key" = "smtp://x.example"', "key must be a domain"),
    ('[queue]\nrequire_tls = ["ok.example", "not a domain"]', "queue.require_tls: not a domain"),
])
def test_bad_queue_settings_name_the_key(tmp_path: Path, toml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, toml)
    assert problem in str(err.value)


def test_every_queue_setting_is_documented() -> None:
    queue = [(key, doc) for key, _, doc in iter_documented() if key.startswith("queue.")]
    assert len(queue) >= 15
    assert all(doc for _, doc in queue)
