"""Adding up the metrics of several processes (`server.workers`): `merge_expositions` and `render_all`."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mailcore.metrics import Metrics, merge_expositions


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def _process(received: int, open_sessions: int, durations: list[float]) -> Metrics:
    m = Metrics()
    m.messages_received.labels(via="mx").inc(received)
    m.smtp_open_sessions.labels(listener="mx").set(open_sessions)
    for d in durations:
        m.delivery_duration.labels(via="mx").observe(d)
    return m


def test_each_sample_is_the_sum_over_the_processes_and_created_the_earliest() -> None:
    first, second = _process(3, 2, [0.004, 0.3]), _process(5, 1, [0.02])
    one, two = _samples(first.render()[0]), _samples(second.render()[0])
    merged = _samples(merge_expositions([first.render()[0], second.render()[0]]))
    mx = (("via", "mx"),)
    assert merged[("mailserver_messages_received_total", mx)] == 8
    assert merged[("mailserver_smtp_open_sessions", (("listener", "mx"),))] == 3
    assert merged[("mailserver_delivery_duration_seconds_count", mx)] == 3
    assert merged[("mailserver_delivery_duration_seconds_sum", mx)] == 0.004 + 0.3 + 0.02
    assert merged[("mailserver_delivery_duration_seconds_bucket", (("le", "0.005"), ("via", "mx")))] == 1
    assert merged[("mailserver_delivery_duration_seconds_bucket", (("le", "0.025"), ("via", "mx")))] == 2
    assert merged[("mailserver_delivery_duration_seconds_bucket", (("le", "+Inf"), ("via", "mx")))] == 3
    created = ("mailserver_messages_received_created", mx)
    assert merged[created] == min(one[created], two[created])
    # every sample of either process is there, and no other
    assert merged.keys() == one.keys() | two.keys()


def test_the_merged_text_keeps_help_and_type() -> None:
    text = merge_expositions([_process(1, 0, []).render()[0], _process(1, 0, []).render()[0]]).decode()
    assert "# HELP mailserver_messages_received_total Messages accepted" in text
    assert "# TYPE mailserver_messages_received_total counter" in text
    assert "# TYPE mailserver_delivery_duration_seconds histogram" in text


async def test_render_all_adds_the_sources_and_is_render_without_them() -> None:
    own = _process(2, 0, [])
    assert (await own.render_all())[0] == own.render()[0]
    other = _process(7, 0, [])

    async def workers() -> list[bytes]:
        return [other.render()[0]]

    own.sources.append(workers)
    body, content_type = await own.render_all()
    assert content_type == own.render()[1]
    assert _samples(body)[("mailserver_messages_received_total", (("via", "mx"),))] == 9
