-- The event history: every distinct verified event Clerk sent, kept for `worker.event_retention`
-- beside its deduplication row, so an operator can find an event, replay a window of them, and
-- rebuild the synced tables from them (`clerk-sync events ...`, `clerk-sync reproject`).
--
-- - One row per distinct svix-id, written by the worker in the same transaction as the event's
--   effect and its dedup row, with the outcome decided for it. A replay is a distinct message (its
--   own svix-id, `replay_of` naming the original) and gets its own row.
-- - Daily partitions on `received_at`, so retention drops whole days (`clerk.history_drop_before`)
--   instead of deleting rows: no per-row cost, no bloat, no vacuum debt. The worker creates the
--   partitions ahead (`clerk.history_ensure_partitions`, at start-up and in housekeeping). A DEFAULT
--   partition catches a row no daily partition takes (a clock far off), so an insert never fails
--   for want of a partition; creating a day's partition moves such rows into it first.
-- - `body` is the envelope exactly as received, compressed by the worker (LZ4 block format behind a
--   one-byte format tag; `clerk-sync-store`'s `history/codec.rs`). Postgres itself only compresses
--   values of rows over about 2 KB, which leaves most Clerk events (1-3 KB) as they are; LZ4 costs
--   the worker a few microseconds per event and halves the bytes.
-- - The object ids an operator searches by: `object_id` (the object the event writes),
--   `user_id` and `organization_id` (the user and organization it concerns, read from the payload:
--   a membership's `public_user_data.user_id`, a session's `user_id`, ...). Indexed with
--   `received_at`, so `events list --user` reads one index range per day.
-- - Privacy: `user.deleted` scrubs that user's events in the same transaction (the worker rewrites
--   each body keeping only what a tombstone keeps: ids, type, timestamps, flags, role); `scrubbed_at`
--   says when. The row, its svix-id and its outcome stay.
--
-- The three per-resource apply functions are replaced (from their live definitions in migrations 7
-- and 8) only to add one switch for `clerk-sync reproject`: with `SET LOCAL clerk.reproject = on`,
-- a version equal to the stored one is written again (rebuilding a column or a table from the
-- history), never an older one. Webhooks never set it.

CREATE TABLE clerk.event_history (
    received_at     timestamptz NOT NULL,
    svix_id         text NOT NULL,
    event_type      text NOT NULL,
    -- The envelope `timestamp`.
    occurred_at     timestamptz,
    object_id       text,
    user_id         text,
    organization_id text,
    outcome         text NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored')),
    -- The svix-id of the event a replay repeats.
    replay_of       text,
    body            bytea,
    scrubbed_at     timestamptz
) PARTITION BY RANGE (received_at);
-- Already compressed: Postgres would only waste time trying again.
ALTER TABLE clerk.event_history ALTER COLUMN body SET STORAGE EXTERNAL;

CREATE INDEX event_history_svix_id_idx ON clerk.event_history (svix_id);
CREATE INDEX event_history_user_idx ON clerk.event_history (user_id, received_at) WHERE user_id IS NOT NULL;
CREATE INDEX event_history_organization_idx ON clerk.event_history (organization_id, received_at)
    WHERE organization_id IS NOT NULL;
CREATE INDEX event_history_type_idx ON clerk.event_history (event_type, received_at);
CREATE INDEX event_history_object_idx ON clerk.event_history (object_id) WHERE object_id IS NOT NULL;

CREATE TABLE clerk.event_history_default PARTITION OF clerk.event_history DEFAULT;

-- Creates the daily partitions of `days` days from `first_day` that do not exist yet.
CREATE FUNCTION clerk.history_ensure_partitions(first_day date, days integer) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    d date;
    lo timestamptz;
    name text;
    created integer := 0;
BEGIN
    FOR i IN 0 .. greatest(days, 1) - 1 LOOP
        d := first_day + i;
        -- Days are UTC days, whatever the session's time zone.
        lo := d::timestamp AT TIME ZONE 'UTC';
        name := 'event_history_' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('clerk.' || name) IS NOT NULL;
        -- Serialize creators (several workers start at once); the check is repeated under the lock.
        PERFORM pg_advisory_xact_lock(hashtext('clerk.event_history partitions'));
        CONTINUE WHEN to_regclass('clerk.' || name) IS NOT NULL;
        EXECUTE format('CREATE TABLE clerk.%I (LIKE clerk.event_history INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                            INCLUDING STORAGE)', name);
        -- Rows the DEFAULT partition took for this day move into it before it is attached.
        EXECUTE format('WITH moved AS (DELETE FROM clerk.event_history_default
                                       WHERE received_at >= %L AND received_at < %L RETURNING *)
                        INSERT INTO clerk.%I SELECT * FROM moved', lo, lo + interval '1 day', name);
        EXECUTE format('ALTER TABLE clerk.event_history ATTACH PARTITION clerk.%I FOR VALUES FROM (%L) TO (%L)',
                       name, lo, lo + interval '1 day');
        created := created + 1;
    END LOOP;
    RETURN created;
END
$fn$;

-- Drops the daily partitions that end on or before `cutoff`: retention without deleting rows.
-- Rows in the DEFAULT partition are few and old by construction; they are deleted.
CREATE FUNCTION clerk.history_drop_before(cutoff timestamptz) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    names text[];
    name text;
BEGIN
    SELECT coalesce(array_agg(c.relname ORDER BY c.relname), '{}') INTO names
    FROM pg_inherits AS i
    JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'clerk.event_history'::regclass
      AND c.relname ~ '^event_history_[0-9]{8}$'
      AND (to_date(substring(c.relname FROM '([0-9]{8})$'), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= cutoff;
    FOREACH name IN ARRAY names LOOP
        EXECUTE format('DROP TABLE clerk.%I', name);
    END LOOP;
    DELETE FROM clerk.event_history_default WHERE received_at < cutoff;
    RETURN cardinality(names);
END
$fn$;

SELECT clerk.history_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, 4);

CREATE OR REPLACE FUNCTION clerk.apply_organizations(batch jsonb) RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    rewrite constant boolean := coalesce(current_setting('clerk.reproject', true), '') = 'on';
BEGIN
    IF jsonb_array_length(batch -> 'upserts') > 0 THEN
        RETURN QUERY
        WITH w AS (
            INSERT INTO clerk.organizations AS o (id, name, slug, image_url, created_by, members_count,
                max_allowed_memberships, public_metadata, private_metadata, created_at, updated_at, raw, synced_at,
                nested, version_at, version_svix_id)
            SELECT x.id, x.name, x.slug, x.image_url, x.created_by, x.members_count, x.max_allowed_memberships,
                x.public_metadata, x.private_metadata, x.created_at, x.updated_at, x.raw, now(), x.nested,
                x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.organizations, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.organizations AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), NOT c.nested, coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, NOT x.nested, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), NOT c.nested, coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, NOT x.nested, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                name = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.name END,
                slug = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.slug END,
                image_url = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.image_url END,
                public_metadata = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.public_metadata END,
                private_metadata = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.private_metadata END,
                raw = CASE WHEN o.deleted_at IS NULL THEN EXCLUDED.raw END,
                created_by = EXCLUDED.created_by,
                members_count = EXCLUDED.members_count,
                max_allowed_memberships = EXCLUDED.max_allowed_memberships,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                nested = EXCLUDED.nested,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(o.updated_at, '-infinity'), NOT o.nested, coalesce(o.version_at, '-infinity'),
                   coalesce(o.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, NOT EXCLUDED.nested, coalesce(EXCLUDED.version_at, '-infinity'),
                   EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(o.updated_at, '-infinity'), NOT o.nested, coalesce(o.version_at, '-infinity'),
                   coalesce(o.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, NOT EXCLUDED.nested, coalesce(EXCLUDED.version_at, '-infinity'),
                   EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING o.id, o.deleted_at IS NULL AS alive
        )
        SELECT w.id FROM w WHERE w.alive;
    END IF;

    IF jsonb_array_length(batch -> 'deletions') > 0 THEN
        INSERT INTO clerk.organizations AS t (id, deleted_at, synced_at)
        SELECT x.id, x.deleted_at, now()
        FROM jsonb_populate_recordset(NULL::clerk.organizations, batch -> 'deletions') AS x ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            name = NULL, slug = NULL, image_url = NULL, public_metadata = NULL, private_metadata = NULL,
            raw = NULL, synced_at = now();
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION clerk.apply_users(batch jsonb) RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    rewrite constant boolean := coalesce(current_setting('clerk.reproject', true), '') = 'on';
BEGIN
    IF jsonb_array_length(batch -> 'upserts') > 0 THEN
        RETURN QUERY
        WITH w AS (
            INSERT INTO clerk.users AS u (id, external_id, username, first_name, last_name, primary_email_address,
                primary_phone_number, image_url, public_metadata, private_metadata, unsafe_metadata, banned, locked,
                two_factor_enabled, last_sign_in_at, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.external_id, x.username, x.first_name, x.last_name, x.primary_email_address,
                x.primary_phone_number, x.image_url, x.public_metadata, x.private_metadata, x.unsafe_metadata,
                x.banned, x.locked, x.two_factor_enabled, x.last_sign_in_at, x.created_at, x.updated_at, x.raw, now(), x.version_at,
                x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.users, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.users AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                -- The external id a deletion named is final (the deletion is the object's last event).
                external_id = coalesce(u.deleted_external_id, EXCLUDED.external_id),
                username = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.username END,
                first_name = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.first_name END,
                last_name = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.last_name END,
                primary_email_address = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.primary_email_address END,
                primary_phone_number = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.primary_phone_number END,
                image_url = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.image_url END,
                public_metadata = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.public_metadata END,
                private_metadata = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.private_metadata END,
                unsafe_metadata = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.unsafe_metadata END,
                last_sign_in_at = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.last_sign_in_at END,
                raw = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.raw END,
                banned = EXCLUDED.banned,
                locked = EXCLUDED.locked,
                two_factor_enabled = EXCLUDED.two_factor_enabled,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(u.updated_at, '-infinity'), coalesce(u.version_at, '-infinity'),
                   coalesce(u.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(u.updated_at, '-infinity'), coalesce(u.version_at, '-infinity'),
                   coalesce(u.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING u.id, u.deleted_at IS NULL AS alive
        )
        SELECT w.id FROM w WHERE w.alive;
    END IF;

    IF jsonb_array_length(batch -> 'deletions') > 0 THEN
        INSERT INTO clerk.users AS t (id, external_id, deleted_external_id, deleted_at, synced_at)
        SELECT x.id, x.external_id, x.external_id, x.deleted_at, now()
        FROM jsonb_populate_recordset(NULL::clerk.users, batch -> 'deletions') AS x ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            external_id = COALESCE(EXCLUDED.external_id, t.external_id),
            deleted_external_id = COALESCE(EXCLUDED.deleted_external_id, t.deleted_external_id),
            username = NULL, first_name = NULL, last_name = NULL, primary_email_address = NULL,
            primary_phone_number = NULL, image_url = NULL, public_metadata = NULL, private_metadata = NULL,
            unsafe_metadata = NULL, last_sign_in_at = NULL, raw = NULL, synced_at = now();
    END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION clerk.apply_memberships(batch jsonb, deleted_users text[], deleted_organizations text[])
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    rewrite constant boolean := coalesce(current_setting('clerk.reproject', true), '') = 'on';
    written text[] := '{}';
    cascade_ids text[];
BEGIN
    IF jsonb_array_length(batch -> 'upserts') > 0 THEN
        WITH w AS (
            INSERT INTO clerk.organization_memberships AS m (id, organization_id, user_id, role, permissions,
                public_metadata, private_metadata, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.organization_id, x.user_id, x.role, x.permissions, x.public_metadata, x.private_metadata,
                x.created_at, x.updated_at, x.raw, now(), x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.organization_memberships, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.organization_memberships AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                public_metadata = CASE WHEN m.deleted_at IS NULL THEN EXCLUDED.public_metadata END,
                private_metadata = CASE WHEN m.deleted_at IS NULL THEN EXCLUDED.private_metadata END,
                raw = CASE WHEN m.deleted_at IS NULL THEN EXCLUDED.raw END,
                organization_id = EXCLUDED.organization_id,
                user_id = EXCLUDED.user_id,
                role = EXCLUDED.role,
                permissions = EXCLUDED.permissions,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(m.updated_at, '-infinity'), coalesce(m.version_at, '-infinity'),
                   coalesce(m.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(m.updated_at, '-infinity'), coalesce(m.version_at, '-infinity'),
                   coalesce(m.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING m.id, m.deleted_at IS NULL AS alive
        )
        SELECT coalesce(array_agg(w.id) FILTER (WHERE w.alive), '{}') INTO written FROM w;
    END IF;

    IF jsonb_array_length(batch -> 'deletions') > 0 THEN
        INSERT INTO clerk.organization_memberships AS t (id, deleted_at, synced_at)
        SELECT x.id, x.deleted_at, now()
        FROM jsonb_populate_recordset(NULL::clerk.organization_memberships, batch -> 'deletions') AS x ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            public_metadata = NULL, private_metadata = NULL, raw = NULL, synced_at = now();
    END IF;

    -- The candidates are gathered into an array first so that both statements below find them by
    -- primary key.
    IF cardinality(deleted_users) > 0 OR cardinality(deleted_organizations) > 0
       OR jsonb_array_length(batch -> 'upserts') > 0 THEN
        SELECT coalesce(array_agg(DISTINCT t.id), '{}') INTO cascade_ids
        FROM (SELECT a.id FROM clerk.organization_memberships AS a WHERE a.user_id = ANY (deleted_users)
              UNION ALL SELECT b.id FROM clerk.organization_memberships AS b
                        WHERE b.organization_id = ANY (deleted_organizations)
              UNION ALL SELECT x ->> 'id' FROM jsonb_array_elements(batch -> 'upserts') AS x) AS t;
        WITH p AS MATERIALIZED (
            -- LEAST ignores NULLs: the earlier of the two deletions, or NULL if neither is deleted.
            SELECT c.id, LEAST((SELECT u.deleted_at FROM clerk.users AS u WHERE u.id = c.user_id),
                               (SELECT o.deleted_at FROM clerk.organizations AS o WHERE o.id = c.organization_id))
                         AS deleted_at
            FROM clerk.organization_memberships AS c
            WHERE c.id = ANY (cascade_ids)
        )
        UPDATE clerk.organization_memberships AS m SET
            deleted_at = LEAST(m.deleted_at, p.deleted_at),
            public_metadata = NULL, private_metadata = NULL, raw = NULL, synced_at = now()
        FROM p
        WHERE m.id = ANY (cascade_ids) AND m.id = p.id AND p.deleted_at IS NOT NULL
          AND (m.deleted_at IS NULL OR m.deleted_at > p.deleted_at OR m.raw IS NOT NULL
               OR m.public_metadata IS NOT NULL OR m.private_metadata IS NOT NULL);
    END IF;

    RETURN QUERY SELECT unnest(written);
END
$fn$;
