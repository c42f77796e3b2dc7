"""The mail store on PostgreSQL (asyncpg): accounts, mailboxes, messages, the queue. Knows no protocol."""
