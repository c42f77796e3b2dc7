"""Sender authentication: SPF, DKIM, DMARC, ARC, and the Authentication-Results header that reports them.

Every check takes a `mailcore.dns.DNSLookup`; none holds a resolver, a cache or any other process-wide
state of its own. `mailcore.auth.check.authenticate_message` is the one entry point that combines them.
"""
