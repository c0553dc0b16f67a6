-- clerk.sessions (issue 19): `session.created/pending/ended/removed/revoked`, for "active devices"
-- and last activity.
--
-- Versions follow the one total order of migration 5 (`updated_at`, the envelope time, the
-- svix-id; a session is never nested in another event, so there is no `nested` rank): only a newer
-- version is written, checked in the pre-filter and again in `ON CONFLICT ... WHERE`.
--
-- Final statuses. `ended`, `removed` and `revoked` are final: once stored, no later write moves
-- the status back to `active` or `pending`, whatever its version. The decision: the status is a
-- merge, not the newest version's field. Of everything seen for a session, the status stored is
-- the highest-ranked final status (`revoked` > `removed` > `ended`; two different final statuses
-- do not happen in Clerk, the rank only makes the merge order-free), else the newest version's
-- status. Every other column follows the version order. So a `session.ended` whose `updated_at`
-- is older than an `active` version stored before it still ends the session (its status only:
-- the stored version, newer, keeps its `last_active_at` and the rest), and an `active` version
-- newer than a stored `ended` one refreshes the columns but not the status. This merge is
-- commutative and idempotent, so shuffled and duplicated histories converge. The worker merges a
-- batch the same way before it calls this function (`db/plan.rs`).
--
-- A user's deletion (`user.deleted`, passed as `deleted_users` by the driver, which holds the
-- exclusive advisory lock on each deleted user while every batch writing a session of that user
-- holds it shared; see `clerk.apply_batch`) ends that user's sessions that are not final already
-- (status `ended`) and removes their personal data (`latest_activity`: IP address, city, device;
-- `raw`, which carries the whole user), with `deleted_at` = the user's deletion time. A session
-- event of a deleted user arriving later is treated the same in the same statement. The ids,
-- times and status stay.
--
-- The change feed (migration 10) records this table's writes with the same generic triggers.

ALTER TABLE clerk.changes DROP CONSTRAINT IF EXISTS changes_resource_check;
ALTER TABLE clerk.changes ADD CONSTRAINT changes_resource_check CHECK (resource IN ('user', 'organization',
    'membership', 'session', 'invitation', 'role', 'permission', 'domain', 'waitlist_entry', 'subscription',
    'subscription_item', 'payment_attempt'));

CREATE TABLE clerk.sessions (
    id                          text PRIMARY KEY,
    user_id                     text,
    client_id                   text,
    status                      text,
    last_active_at              timestamptz,
    last_active_organization_id text,
    expire_at                   timestamptz,
    abandon_at                  timestamptz,
    -- Clerk's `latest_activity` (browser, device, IP address, city): personal, removed with the user.
    latest_activity             jsonb,
    created_at                  timestamptz,
    updated_at                  timestamptz,
    -- Set only when the session's user is deleted (Clerk never deletes a session): the user's
    -- deletion time, as a membership's tombstone has it.
    deleted_at                  timestamptz,
    raw                         jsonb,
    synced_at                   timestamptz NOT NULL DEFAULT now(),
    version_at                  timestamptz,
    version_svix_id             text COLLATE "C"
);
CREATE INDEX sessions_user_id_idx ON clerk.sessions (user_id);

-- The change feed's triggers (migration 10), generated from this table's columns.
SELECT clerk.install_change_triggers('sessions', 'session');

-- 0 for a status that is not final; the rank of the merge above for the final ones.
CREATE FUNCTION clerk.session_final_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT CASE status WHEN 'ended' THEN 1 WHEN 'removed' THEN 2 WHEN 'revoked' THEN 3 ELSE 0 END
$fn$;

CREATE FUNCTION clerk.apply_sessions(batch jsonb, deleted_users text[]) RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    rewrite constant boolean := coalesce(current_setting('clerk.reproject', true), '') = 'on';
    written text[] := '{}';
    ended text[] := '{}';
    cascade_ids text[];
BEGIN
    IF jsonb_array_length(batch -> 'upserts') > 0 THEN
        WITH w AS (
            INSERT INTO clerk.sessions AS s (id, user_id, client_id, status, last_active_at,
                last_active_organization_id, expire_at, abandon_at, latest_activity, created_at, updated_at, raw,
                synced_at, version_at, version_svix_id)
            SELECT x.id, x.user_id, x.client_id, x.status, x.last_active_at, x.last_active_organization_id,
                x.expire_at, x.abandon_at, x.latest_activity, x.created_at, x.updated_at, x.raw, now(), x.version_at,
                x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.sessions, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.sessions AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                user_id = EXCLUDED.user_id,
                client_id = EXCLUDED.client_id,
                -- A final status stays (see the header); among final ones the higher rank wins.
                status = CASE WHEN clerk.session_final_rank(s.status) > clerk.session_final_rank(EXCLUDED.status)
                              THEN s.status ELSE EXCLUDED.status END,
                last_active_at = EXCLUDED.last_active_at,
                last_active_organization_id = EXCLUDED.last_active_organization_id,
                expire_at = EXCLUDED.expire_at,
                abandon_at = EXCLUDED.abandon_at,
                latest_activity = EXCLUDED.latest_activity,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                raw = EXCLUDED.raw,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(s.updated_at, '-infinity'), coalesce(s.version_at, '-infinity'),
                   coalesce(s.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(s.updated_at, '-infinity'), coalesce(s.version_at, '-infinity'),
                   coalesce(s.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING s.id
        )
        SELECT coalesce(array_agg(w.id), '{}') INTO written FROM w;

        -- A final status that came with an older version than the one stored: the status alone.
        -- Re-checked on the newest committed row if a concurrent writer held it.
        WITH f AS (
            UPDATE clerk.sessions AS s SET status = x.status, synced_at = now()
            FROM jsonb_populate_recordset(NULL::clerk.sessions, batch -> 'upserts') AS x
            WHERE s.id = x.id AND clerk.session_final_rank(x.status) > clerk.session_final_rank(s.status)
            RETURNING s.id
        )
        SELECT coalesce(array_agg(f.id), '{}') INTO ended FROM f;
    END IF;

    IF cardinality(deleted_users) > 0 OR jsonb_array_length(batch -> 'upserts') > 0 THEN
        SELECT coalesce(array_agg(DISTINCT t.id), '{}') INTO cascade_ids
        FROM (SELECT a.id FROM clerk.sessions AS a WHERE a.user_id = ANY (deleted_users)
              UNION ALL SELECT x ->> 'id' FROM jsonb_array_elements(batch -> 'upserts') AS x) AS t;
        WITH p AS MATERIALIZED (
            SELECT c.id, (SELECT u.deleted_at FROM clerk.users AS u WHERE u.id = c.user_id) AS deleted_at
            FROM clerk.sessions AS c
            WHERE c.id = ANY (cascade_ids)
        )
        UPDATE clerk.sessions AS s SET
            status = CASE WHEN clerk.session_final_rank(s.status) = 0 THEN 'ended' ELSE s.status END,
            deleted_at = LEAST(s.deleted_at, p.deleted_at),
            latest_activity = NULL, raw = NULL, synced_at = now()
        FROM p
        WHERE s.id = ANY (cascade_ids) AND s.id = p.id AND p.deleted_at IS NOT NULL
          AND (clerk.session_final_rank(s.status) = 0 OR s.deleted_at IS NULL OR s.deleted_at > p.deleted_at
               OR s.raw IS NOT NULL OR s.latest_activity IS NOT NULL);
    END IF;

    RETURN QUERY SELECT DISTINCT unnest(written || ended);
END
$fn$;

DROP FUNCTION clerk.apply_batch(jsonb, jsonb, jsonb);

-- The driver (migration 7's, with `sessions`): the cross-resource locks, then each resource's
-- function in a fixed order.
CREATE FUNCTION clerk.apply_batch(
    organizations jsonb DEFAULT NULL,
    users jsonb DEFAULT NULL,
    memberships jsonb DEFAULT NULL,
    sessions jsonb DEFAULT NULL
) RETURNS TABLE (resource text, id text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    empty constant jsonb := '{"upserts": [], "deletions": []}';
    deleted_users text[];
    deleted_organizations text[];
BEGIN
    organizations := coalesce(organizations, empty);
    users := coalesce(users, empty);
    memberships := coalesce(memberships, empty);
    sessions := coalesce(sessions, empty);
    SELECT coalesce(array_agg(x ->> 'id'), '{}') INTO deleted_users
    FROM jsonb_array_elements(users -> 'deletions') AS x;
    SELECT coalesce(array_agg(x ->> 'id'), '{}') INTO deleted_organizations
    FROM jsonb_array_elements(organizations -> 'deletions') AS x;

    -- A row naming a user (a membership, a session) or an organization written by one batch while
    -- another deletes that user or organization: each transaction's cascade runs before the other
    -- commits, so neither sees the other's row and the row would stay alive (write skew under READ
    -- COMMITTED). Transaction-scoped advisory locks serialize exactly those pairs: exclusive on each
    -- user and organization deleted here, shared on the user and organization each such row
    -- written here names (shared locks do not wait on each other). All are taken first, in one
    -- sorted pass, so they cannot deadlock with each other.
    IF cardinality(deleted_users) > 0 OR cardinality(deleted_organizations) > 0
       OR jsonb_array_length(memberships -> 'upserts') > 0 OR jsonb_array_length(sessions -> 'upserts') > 0 THEN
        PERFORM CASE WHEN k.exclusive THEN pg_advisory_xact_lock(k.class, k.key)
                     ELSE pg_advisory_xact_lock_shared(k.class, k.key) END
        FROM (SELECT l.class, l.key, bool_or(l.exclusive) AS exclusive
              FROM (SELECT 1 AS class, hashtext(x) AS key, true AS exclusive FROM unnest(deleted_users) AS x
                    UNION ALL SELECT 2, hashtext(x), true FROM unnest(deleted_organizations) AS x
                    UNION ALL SELECT 1, hashtext(m ->> 'user_id'), false
                              FROM jsonb_array_elements(memberships -> 'upserts') AS m WHERE m ->> 'user_id' IS NOT NULL
                    UNION ALL SELECT 2, hashtext(m ->> 'organization_id'), false
                              FROM jsonb_array_elements(memberships -> 'upserts') AS m
                              WHERE m ->> 'organization_id' IS NOT NULL
                    UNION ALL SELECT 1, hashtext(s ->> 'user_id'), false
                              FROM jsonb_array_elements(sessions -> 'upserts') AS s WHERE s ->> 'user_id' IS NOT NULL
                   ) AS l
              GROUP BY l.class, l.key
              ORDER BY l.class, l.key) AS k;
    END IF;

    RETURN QUERY SELECT 'organization', o FROM clerk.apply_organizations(organizations) AS o;
    RETURN QUERY SELECT 'user', u FROM clerk.apply_users(users) AS u;
    RETURN QUERY SELECT 'membership', m
        FROM clerk.apply_memberships(memberships, deleted_users, deleted_organizations) AS m;
    RETURN QUERY SELECT 'session', s FROM clerk.apply_sessions(sessions, deleted_users) AS s;
END
$fn$;
