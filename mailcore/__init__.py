"""The shared vocabulary of mail: addresses, replies, DNS, MIME, sender authentication, rate limits.

It knows no protocol listener and no database; protocols and storage build on it."""
