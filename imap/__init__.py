"""IMAP4rev1 server: a sans-IO parser and encoder under a thin asyncio session layer."""
