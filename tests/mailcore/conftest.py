"""Fixtures for mailcore tests: a real DNS server on loopback, and resolvers pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from config.settings import DNSSettings
from mailcore.dns.resolver import Resolver
from tests.dnsserver import DNSTestServer

DNSServerFactory = Callable[..., DNSTestServer]


@pytest.fixture
def dns_server() -> Iterator[DNSServerFactory]:
    """Start a `DNSTestServer` for the given records; every server started is stopped afterwards."""
    started: list[DNSTestServer] = []

    def start(records: Mapping[str, Mapping[str, Any]] | None = None, **kwargs: Any) -> DNSTestServer:
        server = DNSTestServer(records, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def resolver_for(server: DNSTestServer, timeout: float = 0.5, cache_size: int = 100) -> Resolver:
    """Our real resolver, asking only the loopback test server."""
    return Resolver(DNSSettings(nameservers=[server.host], port=server.port, timeout=timeout,
                                cache_size=cache_size))


_SUITE_TALLIES: dict[str, dict[str, int]] = {}


def _tally(name: str) -> dict[str, int]:
    return _SUITE_TALLIES.setdefault(name, {"passed": 0})


@pytest.fixture
def spf_suite_tally() -> dict[str, int]:
    """Counts RFC 7208 suite cases that passed through our layer (printed at the end of the run)."""
    return _tally("RFC 7208 SPF suite")


@pytest.fixture
def arc_suite_tally() -> dict[str, int]:
    """Counts ARC suite cases that passed through our layer (printed at the end of the run)."""
    return _tally("ARC validation suites")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for name, tally in _SUITE_TALLIES.items():
        terminalreporter.write_line(f"{name}: {tally['passed']} cases passed through mailcore")
