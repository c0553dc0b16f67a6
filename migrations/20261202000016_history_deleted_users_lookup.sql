-- Which of a batch's users are already deleted, for the event history (an event about a deleted
-- user is scrubbed as it is stored). Looked up by primary key whatever the statistics say: right
-- after a TRUNCATE (a reproject, the bench) `clerk.users` looks empty to the planner, which then
-- hash-joined a sequential scan of the whole table into every batch as it filled, the same reason
-- the apply functions turn sequential scans off.
CREATE FUNCTION clerk.deleted_users_among(ids text[]) RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
    SELECT u.id FROM clerk.users AS u WHERE u.id = ANY (ids) AND u.deleted_at IS NOT NULL
$fn$;
