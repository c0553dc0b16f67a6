-- The sequencer round in one call: `clerk.sequence_changes` now looks for unpositioned changes
-- itself and returns NULL at once when there are none, before it takes the row lock on
-- `clerk.change_feed_state` (a lock gives the round a transaction id and a WAL record, so an idle
-- round would flush the WAL every poll). The leader used to probe first with a query of its own
-- and call the round only when the probe found something: two round trips per round, and on a
-- loaded machine each one waits for a CPU for the backend and again for the worker
-- (docs/benchmarks.md, the change feed's latency, 2026-12-03).
--
-- The body is migration 10's with that probe in front; the settings are migrations 20 and 21's
-- (CREATE OR REPLACE resets a function's settings to the ones it names, so all are named here).
CREATE OR REPLACE FUNCTION clerk.sequence_changes(max_rows integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $fn$
DECLARE
    last bigint;
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM clerk.changes AS c WHERE c.position IS NULL) THEN
        RETURN NULL;
    END IF;
    SELECT s.last_position INTO last FROM clerk.change_feed_state AS s FOR UPDATE;
    WITH p AS (
        SELECT u.seq, last + row_number() OVER (ORDER BY u.seq) AS pos
        FROM (SELECT c.seq FROM clerk.changes AS c WHERE c.position IS NULL ORDER BY c.seq LIMIT max_rows) AS u
    )
    UPDATE clerk.changes AS c SET position = p.pos FROM p WHERE c.seq = p.seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE clerk.change_feed_state SET last_position = last + n;
    PERFORM pg_notify('clerk_changes', (last + n)::text);
    RETURN last + n;
END
$fn$;
