"""Command handlers, one module per session state (RFC 3501 §6.1-§6.4); importing registers them."""

from imap.handlers import any_state, authenticated, not_authenticated, selected  # noqa: F401
