-- Every process keeps an in-process cache of recipient routing (storage.routecache, issue 8: a RCPT
-- answered without a round trip). It must hear of any change that could alter an answer, from any
-- instance or an admin's psql: these statement-level triggers send one NOTIFY on `routing_changes` per
-- changing statement (and PostgreSQL folds repeats within a transaction into one), delivered at commit.
-- accounts fire only for the columns routing reads: deliveries and expunges UPDATE used_bytes for every
-- message, and a password change alters no route; neither may empty the caches.
CREATE FUNCTION notify_routing_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('routing_changes', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER domains_routing_changes
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON domains
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changes();

CREATE TRIGGER accounts_routing_changes
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF address, domain_id, disabled, quota_bytes ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changes();

CREATE TRIGGER aliases_routing_changes
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON aliases
    FOR EACH STATEMENT EXECUTE FUNCTION notify_routing_changes();
