"""Line endings of the mail we sign and send: the one function that decides them.

RFC 5322 §2.3: CR and LF occur in a message only together, as CRLF. A message that reaches the queue
with a bare CR or a bare LF (a raw message posted to the API from a Unix file, a returned original in a
DSN) must travel with CRLF, and RFC 6376 §5.3 asks the signer to make that same conversion before it
signs: DKIM holds only if the bytes hashed are the bytes sent. Signing and sending therefore both go
through `normalize_crlf`; two rules that differ by one case (a bare CR) break every such signature.

It must not do anything else to the bytes (no dot-stuffing, no final CRLF: that is SMTP's framing).
"""

from __future__ import annotations


def normalize_crlf(data: bytes) -> bytes:
    """`data` with every bare CR and every bare LF made a CRLF, and every CRLF kept (RFC 6376 §5.3).

    Returns `data` itself, uncopied, when it already has CRLF line endings only, which is almost all
    mail (smtp_in refuses anything else): that costs C-level counts (~1.7 ms a MB), no copy; the senders
    call it on the event loop for every message."""
    lf = data.count(b"\n")
    # Every CR and LF is in a pair; the two-byte count, the dearest, only when the cheap ones agree.
    if data.count(b"\r") == lf and data.count(b"\r\n") == lf:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")

