"""MIME parameter lists (mailcore.mime.headers.parse_params): `;` splits only outside quoted strings."""

from __future__ import annotations

import random

import pytest

from mailcore.mime.headers import _split_params, parse_params


def _reference_split(text: str) -> list[str]:
    """The rule, one character at a time: a '"' toggles quoting, a backslash inside quotes takes the
    next character with it, a ';' outside quotes ends a parameter."""
    parts, buf, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\" and i + 1 < len(text):
            buf.append(text[i:i + 2])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return parts


@pytest.mark.parametrize(("value", "head", "params"), [
    ('multipart/mixed; boundary="------------59670c1c1eeba0dd7477e530"', "multipart/mixed",
     [("boundary", "------------59670c1c1eeba0dd7477e530")]),
    ('text/plain; charset="UTF-8"; format=flowed', "text/plain", [("charset", "UTF-8"), ("format", "flowed")]),
    ('attachment; filename="a;b.txt"; size=3', "attachment", [("filename", "a;b.txt"), ("size", "3")]),
    ('attachment; filename="say \\"hi\\"; now"', "attachment", [("filename", 'say "hi"; now')]),
    ('text/plain; name="unterminated; x=1', "text/plain", [("name", "unterminated; x=1")]),
    ("text/plain;;charset=us-ascii;", "text/plain", [("charset", "us-ascii")]),
    ('text/plain; a="\\', "text/plain", [("a", "\\")]),
])
def test_parameters_split_outside_quotes(value: str, head: str, params: list[tuple[str, str]]) -> None:
    assert parse_params(value) == (head, params)


@pytest.mark.parametrize("alphabet", ['ab;"\\ =\n(', 'ab;" ='])  # the second: no escapes, the quick path
def test_the_splitter_agrees_with_the_rule_on_random_lists(alphabet: str) -> None:
    rnd = random.Random(2026)
    for _ in range(20000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 16)))
        assert _split_params(text) == _reference_split(text), repr(text)
