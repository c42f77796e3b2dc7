-- messages.sha256 was written for every message and read by nothing: no query, no tool, no API field.
-- Hashing every message cost 0.1-0.2 ms per 200 KB on the delivery path (bench/mxcpu.py), so this version
-- no longer writes it. The column is not dropped yet: during a rolling upgrade an instance still running
-- the previous version names it in its INSERTs, and they would fail. It only stops being required here;
-- a later migration drops it, once no instance of the previous version can be left (docs/operations.md).
ALTER TABLE messages ALTER COLUMN sha256 DROP NOT NULL;
