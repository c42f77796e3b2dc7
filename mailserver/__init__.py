"""The composition root: the `mailserver` command, the HTTP API and the wiring. Nothing imports it."""
