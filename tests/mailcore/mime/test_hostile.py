"""summarize() on hostile messages: never raises, renders wire text every IMAP parser can read, and
takes time linear in what it is given (no time is asserted: a quadratic case would not end within
the suite's timeout)."""

from __future__ import annotations

from mailcore.mime import summarize


def test_rfc2231_index_longer_than_int_reads_is_an_ordinary_parameter() -> None:
    # int() refuses over 4,300 digits: the ValueError made summarize raise, so the message was refused
    # with 451 at every retry (and APPEND failed)
    name = "title*" + "9" * 5000
    s = summarize(b"Content-Type: text/plain; " + name.encode() + b"=a; title*0=b\r\n\r\nx")
    assert s.bodystructure.startswith(f'("text" "plain" ("charset" "us-ascii" {{5006}}\r\n{name} "a" "title" "b") NIL')


def test_rfc2231_indexes_out_of_order_and_with_gaps_are_merged_in_order() -> None:
    s = summarize(b"Content-Type: application/x; name*2=c; name*99999999=d; name*0=a\r\n\r\nx")
    assert s.bodystructure.startswith('("application" "x" ("name" "acd") NIL')
