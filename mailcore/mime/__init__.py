"""MIME precomputation: what is worked out once, at delivery, so IMAP never re-parses a message.

`summarize(raw)` walks the MIME tree over bytes (offsets kept), and renders ENVELOPE, BODY and
BODYSTRUCTURE as IMAP wire text, plus the decoded fields search and display need. It never raises
on malformed input. It knows no protocol listener and no storage.
"""

from mailcore.mime.precompute import MessageSummary, PartInfo, summarize

__all__ = ["MessageSummary", "PartInfo", "summarize"]
