-- What PostgreSQL does per delivered message (issue 8): drop the partial index of migration 0008 that
-- listed the messages whose body the optional body trigram index does not cover. Since 0009 SEARCH BODY
-- uses the decoded texts' word index and never asks for those messages, but every insert still evaluated
-- the index predicate, whose SQL function (a sub-select over the parts' JSON) is planned anew for each
-- statement: measured 0.3 ms of backend CPU per 2 KB delivery, a third of PostgreSQL's share (0.89 ->
-- 0.58 ms, 4,000 deliveries through storage.delivery.Delivery). The functions stay: an admin's optional
-- body trigram index (docs/schema.md) may be built on mail_search_body; nothing in the server uses it.
DROP INDEX IF EXISTS messages_body_not_all_indexed;
