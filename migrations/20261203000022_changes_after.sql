-- Reading the change feed after a position, as a function whose plan cannot go stale.
--
-- The relay and `clerk-sync changes tail` read `clerk.changes WHERE position > $1 ORDER BY
-- position LIMIT $3` as a prepared statement. Its generic plan was chosen while the table was
-- nearly empty (a sequential scan and a sort), and a connection keeps it: on a worker bench every
-- relay read scanned all of `clerk.changes` (docs/benchmarks.md, 2026-12-03). Here the statement
-- is planned on each call with sequential scans off, so it walks the position index
-- (`changes_position_idx`, partial on `position IS NOT NULL`, which `position > after` implies)
-- from `after` and stops at `max_rows`, whatever the statistics say. `jit = off` as in
-- migration 21. Applications may call it too (docs/change-feed.md).
CREATE FUNCTION clerk.changes_after(after bigint, only_resource text DEFAULT NULL, max_rows bigint DEFAULT 500)
RETURNS SETOF clerk.changes
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
AS $fn$
    SELECT c.* FROM clerk.changes AS c
    WHERE c.position > after AND (only_resource IS NULL OR c.resource = only_resource)
    ORDER BY c.position
    LIMIT max_rows
$fn$;
