-- The history's scrub of a deleted user's stored events, pinned to index plans.
--
-- The worker used to send both statements itself. The rewrite joined an UNNEST of the scrubbed
-- bodies to `clerk.event_history`, and with no statistics on the day's partition (autovacuum has
-- not analyzed it yet, or is off) the planner hash-joined a sequential scan of the whole partition
-- into every batch that deleted a user: about 8,000 buffers per call, a third of the database's
-- time per event with the history on (docs/benchmarks.md, "the scrub's sequential scan",
-- 2026-12-04). These two functions find the rows by the user index and rewrite them by the
-- svix-id index; run-time partition pruning on `received_at` leaves one partition per row.
--
-- plpgsql, so each statement's plan is cached per connection: planning a statement over every
-- daily partition costs more than running it for one user's few rows.

-- The stored events of `users` not scrubbed yet, locked for the rewrite. The deletion events
-- themselves name only ids and are left as they are.
CREATE FUNCTION clerk.history_scrub_candidates(users text[])
RETURNS TABLE (received_at timestamptz, svix_id text, body bytea)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $fn$
BEGIN
    RETURN QUERY
    SELECT h.received_at, h.svix_id, h.body FROM clerk.event_history AS h
    WHERE h.user_id = ANY (users) AND h.scrubbed_at IS NULL AND h.event_type <> 'user.deleted'
    ORDER BY h.received_at, h.svix_id
    FOR UPDATE;
END
$fn$;

-- Writes the scrubbed bodies (NULL drops a body that was not JSON) and returns how many rows
-- changed. A bitmap scan is off too: without statistics the planner ANDed the svix-id index with a
-- full scan of the type index to match `received_at`.
CREATE FUNCTION clerk.history_scrub_write(received timestamptz[], ids text[], bodies bytea[]) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $fn$
DECLARE
    n bigint;
BEGIN
    UPDATE clerk.event_history AS h SET body = x.body, scrubbed_at = now()
    FROM UNNEST(received, ids, bodies) AS x (received_at, svix_id, body)
    WHERE h.received_at = x.received_at AND h.svix_id = x.svix_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;
