-- The history's scrub of a deleted user's stored events, pinned to index plans; two indexes fewer.
--
-- The worker used to send both statements itself. The rewrite joined an UNNEST of the scrubbed
-- bodies to `clerk.event_history`, and with no statistics on the day's partition (autovacuum has
-- not analyzed it yet, or is off) the planner hash-joined a sequential scan of the whole partition
-- into every batch that deleted a user: about 8,000 buffers per call, a third of the database's
-- time per event with the history on (docs/benchmarks.md, "the scrub's sequential scan",
-- 2026-12-04). These two functions find the rows by the user index and rewrite them by their row
-- address (`ctid`, stable while the rows are locked in the same transaction); run-time partition
-- pruning on `received_at` leaves one partition per row.
--
-- plpgsql, so each statement's plan is cached per connection: planning a statement over every
-- daily partition costs more than running it for one user's few rows.

-- The stored events of `users` not scrubbed yet, locked for the rewrite. The deletion events
-- themselves name only ids and are left as they are.
CREATE FUNCTION clerk.history_scrub_candidates(users text[])
RETURNS TABLE (received_at timestamptz, row_id text, svix_id text, body bytea)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $fn$
BEGIN
    RETURN QUERY
    SELECT h.received_at, h.ctid::text, h.svix_id, h.body FROM clerk.event_history AS h
    WHERE h.user_id = ANY (users) AND h.scrubbed_at IS NULL AND h.event_type <> 'user.deleted'
    ORDER BY h.received_at, h.svix_id
    FOR UPDATE;
END
$fn$;

-- Writes the scrubbed bodies (NULL drops a body that was not JSON) over the rows the candidates
-- named, and returns how many rows changed. The svix-id is checked as well: a row address names a
-- row only within its transaction.
CREATE FUNCTION clerk.history_scrub_write(received timestamptz[], row_ids text[], ids text[], bodies bytea[])
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $fn$
DECLARE
    n bigint;
BEGIN
    UPDATE clerk.event_history AS h SET body = x.body, scrubbed_at = now()
    FROM UNNEST(received, row_ids, ids, bodies) AS x (received_at, row_id, svix_id, body)
    WHERE h.received_at = x.received_at AND h.ctid = x.row_id::tid AND h.svix_id = x.svix_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$fn$;

-- Two of the five indexes every stored event paid for, about a quarter of the history's cost per
-- event on the bench's two cores (docs/benchmarks.md), go:
-- - `(svix_id)`: `events show` finds an event through its deduplication row instead (the primary
--   key of `clerk.webhook_events` gives its type and `received_at`, which the type index and the
--   partition bounds then find exactly), and the scrub above rewrites by row address.
-- - `(object_id)` becomes partial: a `user.*` event's object is its user and an `organization.*`
--   event's its organization, so the user and organization indexes already find those;
--   `reproject` reads each resource by the column that names its objects.
-- Rebuilding the partial index reads the stored events once and blocks writes to the history
-- while it runs (an index on a partitioned table cannot be built concurrently): the workers'
-- batches wait, the broker keeps the webhooks meanwhile.
DROP INDEX clerk.event_history_svix_id_idx;
DROP INDEX clerk.event_history_object_idx;
CREATE INDEX event_history_object_idx ON clerk.event_history (object_id)
    WHERE object_id IS NOT NULL AND object_id IS DISTINCT FROM user_id AND object_id IS DISTINCT FROM organization_id;
