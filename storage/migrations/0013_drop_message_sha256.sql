-- messages.sha256 was written for every message and read by nothing: no query, no tool, no API field.
-- Hashing every message cost 0.1-0.2 ms per 200 KB on the delivery path (measured in bench/mxcpu.py).
-- Dropping a column only marks it dropped in the catalogue: no table rewrite, no long lock.
ALTER TABLE messages DROP COLUMN sha256;
