-- The change feed (issue 21): `clerk.changes`, one row per effective change of a stored row,
-- written in the transaction that changes it, and a cursor (`position`) that cannot skip.
--
-- What is a change. Statement-level AFTER triggers on the three tables compare each written row
-- with its pre-image (transition tables: PG15 has no OLD in RETURNING, a trigger has both). A row
-- inserted is `created` (or `deleted` if it is born a tombstone); a row updated is `updated`, or
-- `deleted` when `deleted_at` goes from NULL to a time; an update whose columns are all equal to
-- the pre-image apart from bookkeeping (`synced_at`, `raw`, `nested`, `version_at`,
-- `version_svix_id`) writes nothing. Stale, duplicate and ignored events write no row (the guard
-- keeps them out of the statement), so they write no change either. Triggers rather than code in
-- the apply functions: every writer of the tables (the apply path of any revision, migration 9's
-- reproject, reconcile --fix, a future resource's function) feeds the log without repeating it,
-- and the apply functions stay one concern each.
--
-- The switch: `clerk.changes = 'off'` in a session (the worker's `database.url` with
-- `?options=-c%20clerk.changes%3Doff`, or `ALTER DATABASE ... SET clerk.changes = off`) makes the
-- triggers return at once. Default on.
--
-- The svix-id of a change is the one of the version written (`version_svix_id`); a deletion's is
-- not in the row, so the worker names it in `clerk.change_sources` (a transaction-local setting,
-- `{"user": {"<id>": "<svix-id>"}, ...}`) for batches with deletions; a membership tombstoned
-- because its user or organization was deleted carries that deletion's svix-id. The event type is
-- that svix-id's in `clerk.webhook_events` (written earlier in the same transaction).
--
-- Why the cursor cannot skip. A writer inserts its change rows with `seq` from a sequence and
-- `position` NULL. `seq` is taken in the AFTER trigger, that is after the statement has locked and
-- written its rows: a transaction that had to wait for another's row lock on the same object takes
-- its `seq` after that other transaction committed. So, per object, `seq` order is commit order,
-- and a change's predecessors for its object were committed before it was. One sequencer at a time
-- (`clerk.sequence_changes`, serialized by the row lock on `clerk.change_feed_state`; the relay
-- leader calls it) gives the committed, unpositioned rows it sees the next positions in `seq`
-- order, in its own transaction. Every round's positions are above every earlier round's, and a
-- reader's snapshot sees a round whole or not at all, so "changes with position > P" never misses
-- one: a row committed later gets a later position, never one below P. Per object, positions
-- follow `seq`: a predecessor is visible to the round that sees its successor, and sorts first.
-- (An identity column alone skips: writers commit out of order. Ordering by xid breaks per-object
-- order: a transaction waiting on another's row lock can hold the lower xid.)
--
-- Notifications: each round that positions rows sends `NOTIFY clerk_changes` with the new last
-- position (small; coalesced per round). Writers do not notify: NOTIFY takes a database-wide lock
-- from pre-commit to the end of the commit, which would serialize every worker's commit; the
-- sequencer polls the partial index of unpositioned rows instead (every 10 ms by default).

CREATE SEQUENCE clerk.changes_seq;

CREATE TABLE clerk.changes (
    -- Writer order (taken after the row lock); not a cursor: see above.
    seq          bigint PRIMARY KEY DEFAULT nextval('clerk.changes_seq'),
    -- The cursor: NULL until the sequencer has given it one; only grows.
    position     bigint UNIQUE,
    resource     text NOT NULL CHECK (resource IN ('user', 'organization', 'membership')),
    object_id    text NOT NULL,
    operation    text NOT NULL CHECK (operation IN ('created', 'updated', 'deleted')),
    -- The row's `updated_at` after the change (Clerk's version of the object).
    version      timestamptz,
    -- The columns whose value changed (all non-NULL columns for a row created), sorted.
    changed      text[] NOT NULL,
    svix_id      text,
    event_type   text,
    -- The writing transaction's time (it commits a few milliseconds later).
    committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_unpositioned_idx ON clerk.changes (seq) WHERE position IS NULL;
CREATE INDEX changes_object_idx ON clerk.changes (resource, object_id);
CREATE INDEX changes_committed_at_idx ON clerk.changes USING brin (committed_at);

-- One row: the last position given, and the relay's progress (the last position it published,
-- confirmed).
CREATE TABLE clerk.change_feed_state (
    id                boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_position     bigint NOT NULL DEFAULT 0,
    relayed_position  bigint NOT NULL DEFAULT 0,
    relayed_at        timestamptz
);
INSERT INTO clerk.change_feed_state DEFAULT VALUES;

-- What one written row changed, from its pre-image `o` (NULL for a row inserted) and `n`; no row
-- when nothing but bookkeeping changed. Inlined into the triggers' statement.
CREATE FUNCTION clerk.change_of(resource text, o jsonb, n jsonb, sources jsonb)
RETURNS TABLE (object_id text, operation text, version timestamptz, changed text[], svix_id text)
LANGUAGE sql IMMUTABLE
AS $fn$
    SELECT c.id, c.operation, c.version, c.changed,
           CASE WHEN c.operation = 'deleted'
                THEN coalesce(sources #>> ARRAY[resource, c.id],
                              sources #>> ARRAY['user', n ->> 'user_id'],
                              sources #>> ARRAY['organization', n ->> 'organization_id'])
                ELSE n ->> 'version_svix_id' END
    FROM (SELECT n ->> 'id' AS id,
                 CASE WHEN o IS NULL THEN (CASE WHEN n ->> 'deleted_at' IS NULL THEN 'created' ELSE 'deleted' END)
                      WHEN o ->> 'deleted_at' IS NULL AND n ->> 'deleted_at' IS NOT NULL THEN 'deleted'
                      ELSE 'updated' END AS operation,
                 (n ->> 'updated_at')::timestamptz AS version,
                 ARRAY(SELECT e.key FROM jsonb_each(n) AS e
                       WHERE e.key <> ALL ('{synced_at,raw,nested,version_at,version_svix_id}'::text[])
                         AND CASE WHEN o IS NULL THEN e.value <> 'null'::jsonb
                                  ELSE e.value IS DISTINCT FROM o -> e.key END
                       ORDER BY e.key) AS changed) AS c
    WHERE cardinality(c.changed) > 0
$fn$;

-- The trigger functions (TG_ARGV[0] is the resource's name). Statement-level: one INSERT into
-- clerk.changes per statement, rows in id order. PG allows a transition table for one event per
-- trigger, hence one function for inserts and one for updates.
CREATE FUNCTION clerk.record_inserted() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF current_setting('clerk.changes', true) IS DISTINCT FROM 'off' THEN
        INSERT INTO clerk.changes (resource, object_id, operation, version, changed, svix_id, event_type)
        SELECT TG_ARGV[0], c.object_id, c.operation, c.version, c.changed, c.svix_id,
               (SELECT w.event_type FROM clerk.webhook_events AS w WHERE w.svix_id = c.svix_id)
        FROM new_rows AS r,
             LATERAL clerk.change_of(TG_ARGV[0], NULL, to_jsonb(r),
                                     nullif(current_setting('clerk.change_sources', true), '')::jsonb) AS c
        ORDER BY c.object_id;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION clerk.record_updated() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- The apply functions turn these off for their own plans; joining the transition tables wants them.
SET enable_seqscan = on
SET enable_hashjoin = on
AS $fn$
BEGIN
    IF current_setting('clerk.changes', true) IS DISTINCT FROM 'off' THEN
        INSERT INTO clerk.changes (resource, object_id, operation, version, changed, svix_id, event_type)
        SELECT TG_ARGV[0], c.object_id, c.operation, c.version, c.changed, c.svix_id,
               (SELECT w.event_type FROM clerk.webhook_events AS w WHERE w.svix_id = c.svix_id)
        FROM (SELECT to_jsonb(r) AS j FROM new_rows AS r) AS n
        JOIN (SELECT to_jsonb(r) AS j FROM old_rows AS r) AS o ON o.j ->> 'id' = n.j ->> 'id',
             LATERAL clerk.change_of(TG_ARGV[0], o.j, n.j,
                                     nullif(current_setting('clerk.change_sources', true), '')::jsonb) AS c
        ORDER BY c.object_id;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER changes_inserted AFTER INSERT ON clerk.users
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION clerk.record_inserted('user');
CREATE TRIGGER changes_updated AFTER UPDATE ON clerk.users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clerk.record_updated('user');
CREATE TRIGGER changes_inserted AFTER INSERT ON clerk.organizations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION clerk.record_inserted('organization');
CREATE TRIGGER changes_updated AFTER UPDATE ON clerk.organizations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clerk.record_updated('organization');
CREATE TRIGGER changes_inserted AFTER INSERT ON clerk.organization_memberships
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION clerk.record_inserted('membership');
CREATE TRIGGER changes_updated AFTER UPDATE ON clerk.organization_memberships
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clerk.record_updated('membership');

-- One sequencer round: gives the committed, unpositioned changes it sees (at most `max_rows`, the
-- lowest `seq` first: a prefix keeps per-object order) the next positions in `seq` order; returns
-- the last position given, or NULL when there was nothing. The row lock on the state row
-- serializes rounds even if two callers race. Notifies `clerk_changes` with the last position.
CREATE FUNCTION clerk.sequence_changes(max_rows integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    last bigint;
    n bigint;
BEGIN
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

-- Retention, as for the dedup rows: positioned changes written before `cutoff`, at most `max_rows`
-- at a time. With `keep_unrelayed`, none the relay has not published yet.
CREATE FUNCTION clerk.prune_changes(cutoff timestamptz, keep_unrelayed boolean, max_rows integer DEFAULT 10000)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH d AS (
        DELETE FROM clerk.changes WHERE seq = ANY (ARRAY(
            SELECT c.seq FROM clerk.changes AS c
            WHERE c.committed_at < cutoff AND c.position IS NOT NULL
              AND (NOT keep_unrelayed OR c.position <= (SELECT s.relayed_position FROM clerk.change_feed_state AS s))
            LIMIT max_rows))
        RETURNING 1
    )
    SELECT count(*) FROM d
$fn$;

-- "Wait for sync": true as soon as the object's row is at `version` (its `updated_at`) or newer, or
-- is a tombstone; false after `timeout`. A function cannot LISTEN (notifications are delivered
-- between transactions), so it polls every 10 ms; each poll sees the latest commits (READ
-- COMMITTED: call it outside a REPEATABLE READ transaction). For an application with a LISTEN
-- connection, `clerk_changes` and `clerk.changes` wake it instead (docs/change-feed.md).
CREATE FUNCTION clerk.wait_for(resource text, id text, version timestamptz, timeout interval DEFAULT '10 seconds')
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    deadline constant timestamptz := clock_timestamp() + timeout;
    tbl constant text := CASE resource WHEN 'user' THEN 'users' WHEN 'organization' THEN 'organizations'
                                       WHEN 'membership' THEN 'organization_memberships' END;
    reached boolean;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'unknown resource %: user, organization or membership', resource;
    END IF;
    LOOP
        EXECUTE format('SELECT deleted_at IS NOT NULL OR updated_at >= $1 FROM clerk.%I WHERE id = $2', tbl)
            INTO reached USING version, id;
        IF coalesce(reached, false) THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$fn$;
