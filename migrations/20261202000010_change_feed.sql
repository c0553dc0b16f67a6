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
    position     bigint,
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
-- Partial both: a writer's insert (position NULL) touches only the second; the sequencer's update
-- moves the row from the second to the first.
CREATE UNIQUE INDEX changes_position_idx ON clerk.changes (position) WHERE position IS NOT NULL;
CREATE INDEX changes_unpositioned_idx ON clerk.changes (seq) WHERE position IS NULL;
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

-- The triggers. Statement-level: one INSERT into clerk.changes per statement, rows in id order.
-- PG allows a transition table for one event per trigger, hence one trigger for inserts and one
-- for updates per table. The changed columns are found by comparing each column of the new row
-- with the pre-image natively (`IS DISTINCT FROM`); a generic version through `to_jsonb` of both
-- rows cost about 100 µs per row, as much as the write itself. So the trigger functions are
-- generated from the table's columns by `clerk.install_change_triggers(table, resource)`: a
-- migration that adds a column calls it again for that table (docs/adding-a-resource.md), or the
-- new column's changes go unnamed (a change of it alone would write no change row).
--
-- The functions run inside the apply functions, which turn sequential scans off. That stays (a
-- sequential scan of `clerk.webhook_events` per change, chosen while the table looked empty and
-- cached with the plan, made a batch take seconds), but with it every plan is costed so high that
-- JIT compilation would switch on for each statement: `jit = off`. The event type is looked up
-- with `COLLATE "default"`: `version_svix_id` is `COLLATE "C"`, and a comparison in another
-- collation than the primary key's cannot use it (a scan of `clerk.webhook_events` per change).
CREATE FUNCTION clerk.install_change_triggers(tbl text, resource text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $install$
DECLARE
    bookkeeping constant text[] := '{synced_at,raw,nested,version_at,version_svix_id}';
    rel constant regclass := format('clerk.%I', tbl)::regclass;
    inserted text;
    updated text;
    sources text;
    body constant text := $body$
CREATE OR REPLACE FUNCTION clerk.%1$I() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = on
SET jit = off
AS $fn$
DECLARE
    sources jsonb;
BEGIN
    IF current_setting('clerk.changes', true) IS NOT DISTINCT FROM 'off' THEN
        RETURN NULL;
    END IF;
    sources := nullif(current_setting('clerk.change_sources', true), '')::jsonb;
    INSERT INTO clerk.changes (resource, object_id, operation, version, changed, svix_id, event_type)
    SELECT %2$L, s.id, s.operation, s.updated_at, s.changed, s.svix,
           (SELECT w.event_type FROM clerk.webhook_events AS w WHERE w.svix_id = s.svix COLLATE "default")
    FROM (SELECT c.*, CASE WHEN c.operation = 'deleted' THEN %3$s ELSE c.version_svix_id END AS svix
          FROM (SELECT r.*, %4$s AS operation, array_remove(ARRAY[%5$s], NULL) AS changed
                FROM %6$s) AS c
          WHERE cardinality(c.changed) > 0) AS s
    ORDER BY s.id;
    RETURN NULL;
END
$fn$
$body$;
BEGIN
    SELECT string_agg(format('CASE WHEN r.%1$I IS NOT NULL THEN %1$L END', a.attname), ', ' ORDER BY a.attname),
           string_agg(format('CASE WHEN r.%1$I IS DISTINCT FROM q.%1$I THEN %1$L END', a.attname), ', '
                      ORDER BY a.attname)
    INTO inserted, updated
    FROM pg_attribute AS a
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> ALL (bookkeeping);
    -- A deletion's svix-id: the object's own deletion, else (a membership) its user's or its
    -- organization's, as `clerk.change_sources` names them.
    SELECT 'coalesce(' || string_agg(t.expr, ', ' ORDER BY t.o) || ')' INTO sources
    FROM (SELECT 0 AS o, format('sources #>> ARRAY[%L, c.id]', resource) AS expr
          UNION ALL SELECT 1, 'sources #>> ARRAY[''user'', c.user_id]' FROM pg_attribute
                    WHERE attrelid = rel AND attname = 'user_id' AND NOT attisdropped
          UNION ALL SELECT 2, 'sources #>> ARRAY[''organization'', c.organization_id]' FROM pg_attribute
                    WHERE attrelid = rel AND attname = 'organization_id' AND NOT attisdropped) AS t;
    EXECUTE format(body, 'changes_' || tbl || '_inserted', resource, sources,
                   $$CASE WHEN r.deleted_at IS NULL THEN 'created' ELSE 'deleted' END$$, inserted, 'new_rows AS r');
    EXECUTE format(body, 'changes_' || tbl || '_updated', resource, sources,
                   $$CASE WHEN q.deleted_at IS NULL AND r.deleted_at IS NOT NULL THEN 'deleted' ELSE 'updated' END$$,
                   updated, 'new_rows AS r JOIN old_rows AS q ON q.id = r.id');
    EXECUTE format('DROP TRIGGER IF EXISTS changes_inserted ON %s', rel);
    EXECUTE format('DROP TRIGGER IF EXISTS changes_updated ON %s', rel);
    EXECUTE format('CREATE TRIGGER changes_inserted AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
                   'FOR EACH STATEMENT EXECUTE FUNCTION clerk.%I()', rel, 'changes_' || tbl || '_inserted');
    EXECUTE format('CREATE TRIGGER changes_updated AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows '
                   'NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION clerk.%I()', rel,
                   'changes_' || tbl || '_updated');
END
$install$;

SELECT clerk.install_change_triggers('users', 'user');
SELECT clerk.install_change_triggers('organizations', 'organization');
SELECT clerk.install_change_triggers('organization_memberships', 'membership');

-- Generic trigger functions, `EXECUTE FUNCTION clerk.record_inserted('<resource>')` and
-- `clerk.record_updated('<resource>')` with the same transition tables: the same rows through
-- `to_jsonb` of the whole row, for any table with `id`, `updated_at`, `deleted_at` and
-- `version_svix_id`, about 100 µs per row. For a table written at webhook rates use
-- `clerk.install_change_triggers` instead.
CREATE FUNCTION clerk.record_inserted() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
DECLARE
    sources jsonb;
BEGIN
    IF current_setting('clerk.changes', true) IS NOT DISTINCT FROM 'off' THEN
        RETURN NULL;
    END IF;
    sources := nullif(current_setting('clerk.change_sources', true), '')::jsonb;
    INSERT INTO clerk.changes (resource, object_id, operation, version, changed, svix_id, event_type)
    SELECT TG_ARGV[0], s.id, s.operation, s.updated_at, s.changed, s.svix,
           (SELECT w.event_type FROM clerk.webhook_events AS w WHERE w.svix_id = s.svix COLLATE "default")
    FROM (SELECT p.id, p.updated_at, p.operation,
                 ARRAY(SELECT e.key FROM jsonb_each(p.n) AS e WHERE e.value <> 'null'::jsonb ORDER BY e.key) AS changed,
                 CASE WHEN p.operation = 'deleted' THEN sources #>> ARRAY[TG_ARGV[0], p.id] ELSE p.version_svix_id END
                     AS svix
          FROM (SELECT r.id, r.updated_at, r.version_svix_id,
                       CASE WHEN r.deleted_at IS NULL THEN 'created' ELSE 'deleted' END AS operation,
                       to_jsonb(r) - '{synced_at,raw,nested,version_at,version_svix_id}'::text[] AS n
                FROM new_rows AS r OFFSET 0) AS p) AS s
    ORDER BY s.id;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION clerk.record_updated() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = on
SET jit = off
AS $fn$
DECLARE
    sources jsonb;
BEGIN
    IF current_setting('clerk.changes', true) IS NOT DISTINCT FROM 'off' THEN
        RETURN NULL;
    END IF;
    sources := nullif(current_setting('clerk.change_sources', true), '')::jsonb;
    INSERT INTO clerk.changes (resource, object_id, operation, version, changed, svix_id, event_type)
    SELECT TG_ARGV[0], s.id, s.operation, s.updated_at, s.changed, s.svix,
           (SELECT w.event_type FROM clerk.webhook_events AS w WHERE w.svix_id = s.svix COLLATE "default")
    FROM (SELECT c.*, CASE WHEN c.operation = 'deleted' THEN sources #>> ARRAY[TG_ARGV[0], c.id]
                           ELSE c.version_svix_id END AS svix
          FROM (SELECT p.id, p.updated_at, p.version_svix_id,
                       CASE WHEN p.old_deleted_at IS NULL AND p.deleted_at IS NOT NULL THEN 'deleted' ELSE 'updated' END
                           AS operation,
                       ARRAY(SELECT e.key FROM jsonb_each(p.n) AS e WHERE e.value IS DISTINCT FROM p.o -> e.key
                             ORDER BY e.key) AS changed
                FROM (SELECT r.id, r.updated_at, r.deleted_at, r.version_svix_id, q.deleted_at AS old_deleted_at,
                             to_jsonb(r) - '{synced_at,raw,nested,version_at,version_svix_id}'::text[] AS n,
                             to_jsonb(q) - '{synced_at,raw,nested,version_at,version_svix_id}'::text[] AS o
                      FROM new_rows AS r JOIN old_rows AS q ON q.id = r.id OFFSET 0) AS p OFFSET 0) AS c
          WHERE cardinality(c.changed) > 0) AS s
    ORDER BY s.id;
    RETURN NULL;
END
$fn$;

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
