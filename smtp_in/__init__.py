"""Inbound SMTP: the MX and submission listeners (aiosmtpd) and the delivery seam they drive."""
