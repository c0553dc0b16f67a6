-- The apply path split by resource, with a named contract (issue: one 56-parameter positional
-- function, redefined whole by each revision). Each resource has its own function taking one
-- `jsonb` batch, `{"upserts": [rows], "deletions": [rows]}`, whose rows are built from one Rust
-- struct per resource (`clerk-sync-store`'s `db/resources.rs`) and whose keys are the table's own
-- column names, read with `jsonb_populate_recordset(NULL::clerk.<table>, ...)`: no positional
-- list to keep in step. A driver, `clerk.apply_batch`, takes one argument per resource by name,
-- takes the cross-resource locks, and calls them in a fixed order. A later revision replaces only
-- the function it changes (`CREATE OR REPLACE` of that one function, in a new migration);
-- migrations/README.md says which file holds the live definition of each.
--
-- What the functions decide is only what is written. Each returns the ids of the rows it wrote
-- that are alive (not tombstones); the worker decides every message's outcome from that.
--
-- The rules are migration 5's, unchanged:
-- - A version is written only when strictly greater than the stored one in the one total order
--   of versions: `updated_at`, the object's own event above a copy nested in another event, the
--   envelope time (absent lowest), the svix-id bytewise (COLLATE "C"). The comparison sits in the
--   pre-filter (so a row already newer is not even locked: every membership event carries its
--   organization) and, decisive under concurrency, in `ON CONFLICT ... DO UPDATE ... WHERE`,
--   which sees the newest committed row once a concurrent writer's lock is released.
-- - A tombstone is never revived: a later version updates only non-personal columns.
-- - The earliest deletion wins; deletion removes personal data.
-- - Rows are written in id order, resources in a fixed order (organizations, users, memberships),
--   so concurrent batches lock rows in the same order.
--
-- `clerk.apply_changes` (migration 5) stays for one release: workers of the previous release call
-- it during a rolling upgrade. Nothing in this release calls it.

CREATE FUNCTION clerk.apply_organizations(batch jsonb) RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
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
                 >= (x.updated_at, NOT x.nested, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C"))
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

CREATE FUNCTION clerk.apply_users(batch jsonb) RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
BEGIN
    IF jsonb_array_length(batch -> 'upserts') > 0 THEN
        RETURN QUERY
        WITH w AS (
            INSERT INTO clerk.users AS u (id, external_id, username, first_name, last_name, primary_email_address,
                primary_phone_number, image_url, public_metadata, private_metadata, unsafe_metadata, banned, locked,
                last_sign_in_at, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.external_id, x.username, x.first_name, x.last_name, x.primary_email_address,
                x.primary_phone_number, x.image_url, x.public_metadata, x.private_metadata, x.unsafe_metadata,
                x.banned, x.locked, x.last_sign_in_at, x.created_at, x.updated_at, x.raw, now(), x.version_at,
                x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.users, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.users AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C"))
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
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(u.updated_at, '-infinity'), coalesce(u.version_at, '-infinity'),
                   coalesce(u.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
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

-- Memberships, and the tombstones of memberships whose user or organization is deleted: those of
-- the users and organizations deleted in this batch (`deleted_users`, `deleted_organizations`), and
-- those written in this batch whose user or organization was deleted before. The earliest deletion
-- wins (of the membership's own, its user's and its organization's).
CREATE FUNCTION clerk.apply_memberships(batch jsonb, deleted_users text[], deleted_organizations text[])
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
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
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C"))
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

-- The driver: one argument per resource, each `{"upserts": [...], "deletions": [...]}` or NULL.
-- Returns the rows written and alive, as (resource, id).
CREATE FUNCTION clerk.apply_batch(
    organizations jsonb DEFAULT NULL,
    users jsonb DEFAULT NULL,
    memberships jsonb DEFAULT NULL
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
    SELECT coalesce(array_agg(x ->> 'id'), '{}') INTO deleted_users
    FROM jsonb_array_elements(users -> 'deletions') AS x;
    SELECT coalesce(array_agg(x ->> 'id'), '{}') INTO deleted_organizations
    FROM jsonb_array_elements(organizations -> 'deletions') AS x;

    -- A membership written by one batch while another deletes its user or organization: each
    -- transaction's cascade runs before the other commits, so neither sees the other's row and
    -- the membership would stay alive (write skew under READ COMMITTED). Transaction-scoped
    -- advisory locks serialize exactly those pairs: exclusive on each user and organization
    -- deleted here, shared on the user and organization of each membership written here (shared
    -- locks do not wait on each other). All are taken first, in one sorted pass, so they cannot
    -- deadlock with each other.
    IF cardinality(deleted_users) > 0 OR cardinality(deleted_organizations) > 0
       OR jsonb_array_length(memberships -> 'upserts') > 0 THEN
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
                   ) AS l
              GROUP BY l.class, l.key
              ORDER BY l.class, l.key) AS k;
    END IF;

    RETURN QUERY SELECT 'organization', o FROM clerk.apply_organizations(organizations) AS o;
    RETURN QUERY SELECT 'user', u FROM clerk.apply_users(users) AS u;
    RETURN QUERY SELECT 'membership', m
        FROM clerk.apply_memberships(memberships, deleted_users, deleted_organizations) AS m;
END
$fn$;
