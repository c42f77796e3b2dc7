"""Trace headers: shape, and that no peer value can inject a header line (CVE-2024-6923 class)."""

from __future__ import annotations

import dataclasses
import email.utils
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailcore.received import TraceInfo, clean, clean_value, date_header, protocol_name, received_header

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_received_shape() -> None:
    info = TraceInfo(helo="client.example", peer_ip="192.0.2.1", our_hostname="mx.example",
                     protocol="ESMTPS", queue_id="abc", tls_version="TLSv1.3", tls_cipher="TLS_AES_256",
                     recipient="u@mx.example")
    assert received_header(info, WHEN) == (
        b"Received: from client.example ([192.0.2.1])\r\n\tby mx.example (TLSv1.3 with cipher TLS_AES_256)\r\n"
        b"\twith ESMTPS id abc for <u@mx.example>;\r\n\tTue, 02 Jan 2024 03:04:05 +0000\r\n")
    named = dataclasses.replace(info, peer_name="host.example")  # forward-confirmed reverse DNS
    assert received_header(named, WHEN).startswith(b"Received: from client.example (host.example [192.0.2.1])\r\n")


@pytest.mark.parametrize("evil", ["x\r\nBcc: victim@example", "x\nX: y", "x\0y", "x\rX: y", "a) (b\\", "\x1b[31m"])
def test_no_injection(evil: str) -> None:
    info = TraceInfo(helo=evil, peer_ip="192.0.2.1", our_hostname="mx.example", protocol="ESMTP",
                     queue_id="q", authenticated_as=evil, recipient=evil, peer_name=evil)
    header = received_header(info, WHEN)
    lines = header.split(b"\r\n")
    assert lines[-1] == b""
    assert all(line.startswith((b"Received:", b"\t")) for line in lines[:-1])
    assert b"\n" not in header.replace(b"\r\n", b"") and b"\r" not in header.replace(b"\r\n", b"")
    assert b"\0" not in header
    assert "(" not in clean(evil) and ")" not in clean(evil)


@pytest.mark.parametrize(("kw", "name"), [
    ({"esmtp": False, "tls": False, "authenticated": False, "utf8": False}, "SMTP"),
    ({"esmtp": True, "tls": True, "authenticated": True, "utf8": False}, "ESMTPSA"),
    ({"esmtp": True, "tls": True, "authenticated": False, "utf8": True}, "UTF8SMTPS"),
])
def test_protocol_names(kw: dict[str, bool], name: str) -> None:
    assert protocol_name(**kw) == name


@settings(max_examples=500)
@given(st.text(), st.integers(min_value=0, max_value=300))
def test_clean_keeps_exactly_the_safe_characters(value: str, limit: int) -> None:
    """clean and clean_value delete controls (and, for clean, the comment's delimiters) and nothing
    else, in order, then cut at the limit: the definition, written out character by character."""
    assert clean(value, limit) == "".join(c for c in value if c >= " " and c != "\x7f" and c not in "()\\")[:limit]
    assert clean_value(value, limit) == "".join(c for c in value if c >= " " and c != "\x7f")[:limit]


def test_now_is_the_current_second_in_local_time() -> None:
    """Without `when`, the date is now's, as email.utils formats the local time (made once a second)."""
    info = TraceInfo(helo="client.example", peer_ip="192.0.2.1", our_hostname="mx.example", protocol="ESMTP",
                     queue_id="q")
    before = email.utils.format_datetime(datetime.now().astimezone())
    header, field = received_header(info), date_header()
    after = email.utils.format_datetime(datetime.now().astimezone())
    assert header.decode().rsplit("\t", 1)[1] in (f"{before}\r\n", f"{after}\r\n")
    assert field.decode() in (f"Date: {before}\r\n", f"Date: {after}\r\n")
    assert date_header(WHEN) == b"Date: Tue, 02 Jan 2024 03:04:05 +0000\r\n"


def test_connection_facts_are_each_connections_own() -> None:
    """The from/by lines are made once per connection's facts: a message never gets another's."""
    plain = TraceInfo(helo="a.example", peer_ip="192.0.2.1", our_hostname="mx.example", protocol="ESMTP",
                      queue_id="q1")
    tls = replace(plain, tls_version="TLSv1.3", queue_id="q2", authenticated_as="u@mx.example")
    for _ in range(2):
        assert received_header(plain, WHEN) == (
            b"Received: from a.example ([192.0.2.1])\r\n\tby mx.example\r\n\twith ESMTP id q1;\r\n"
            b"\tTue, 02 Jan 2024 03:04:05 +0000\r\n")
        assert received_header(tls, WHEN) == (
            b"Received: from a.example ([192.0.2.1])\r\n\tby mx.example (TLSv1.3)\r\n"
            b"\t(authenticated as u@mx.example)\r\n\twith ESMTP id q2;\r\n\tTue, 02 Jan 2024 03:04:05 +0000\r\n")
