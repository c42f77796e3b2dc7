"""Outbound SMTP: the durable queue workers, MX routing, delivery, retries and DSN bounces."""
