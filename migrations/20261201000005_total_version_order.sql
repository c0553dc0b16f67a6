-- One total order of versions, used by every write, tombstone and guard (issue: equal versions and
-- nested copies depended on timing and arrival order). A version of an object is ordered by
--   1. Clerk's `data.updated_at`;
--   2. whether it is the object's own event: a copy of an organization nested in a membership
--      event ranks below the organization's own event of the same `updated_at` (the nested copy
--      is partial: `members_count` and other fields lag);
--   3. the envelope `timestamp` (absent or unrepresentable ranks lowest);
--   4. the svix-id, compared bytewise (COLLATE "C", as the worker compares it in Rust).
-- A version is written only when it is strictly greater than the stored one. The comparison sits
-- in the pre-filter and, decisive under concurrency, in `ON CONFLICT ... DO UPDATE ... WHERE`,
-- which Postgres evaluates against the newest committed row once a concurrent writer's lock is
-- released (the pre-filter only sees the statement's snapshot). Rows written before this
-- migration have no tiebreak: they rank lowest among versions of their `updated_at`, as full
-- (not nested) versions.
--
-- A deletion is the last event of its object. `users.deleted_external_id` keeps the external id
-- a `user.deleted` named, so that it stays the final `external_id` whether a late update of the
-- same user arrives before or after the deletion.
--
-- The function's signature changes (the tiebreak columns are new; `e_owner`, always true since
-- migration 4, is gone), so the old one is dropped. Otherwise the body is migration 4's.

ALTER TABLE clerk.users
    ADD COLUMN version_at timestamptz,
    ADD COLUMN version_svix_id text COLLATE "C",
    ADD COLUMN deleted_external_id text;
ALTER TABLE clerk.organizations
    ADD COLUMN version_at timestamptz,
    ADD COLUMN version_svix_id text COLLATE "C",
    -- The stored version is a copy nested in a membership event, not the organization's own event.
    ADD COLUMN nested boolean NOT NULL DEFAULT false;
ALTER TABLE clerk.organization_memberships
    ADD COLUMN version_at timestamptz,
    ADD COLUMN version_svix_id text COLLATE "C";

DROP FUNCTION clerk.apply_changes(
    text[], text[], text[], text[], text[], int4[], int4[], text[], text[], timestamptz[], timestamptz[], text[], bool[],
    text[], timestamptz[],
    text[], text[], text[], text[], text[], text[], text[], text[], text[], text[], text[], bool[], bool[],
    timestamptz[], timestamptz[], timestamptz[], text[],
    text[], text[], timestamptz[],
    text[], text[], text[], text[], text[], text[], text[], timestamptz[], timestamptz[], text[],
    text[], timestamptz[],
    text[], "char"[], text[], bool[]);

CREATE FUNCTION clerk.apply_changes(
    o_id text[], o_name text[], o_slug text[], o_image_url text[], o_created_by text[],
    o_members_count int4[], o_max_allowed int4[], o_pub text[], o_priv text[],
    o_created_at timestamptz[], o_updated_at timestamptz[], o_raw text[], o_nested bool[],
    o_version_at timestamptz[], o_version_id text[],
    od_id text[], od_at timestamptz[],
    u_id text[], u_external_id text[], u_username text[], u_first_name text[], u_last_name text[],
    u_email text[], u_phone text[], u_image_url text[], u_pub text[], u_priv text[], u_uns text[],
    u_banned bool[], u_locked bool[], u_last_sign_in_at timestamptz[], u_created_at timestamptz[],
    u_updated_at timestamptz[], u_raw text[], u_version_at timestamptz[], u_version_id text[],
    ud_id text[], ud_external_id text[], ud_at timestamptz[],
    m_id text[], m_organization_id text[], m_user_id text[], m_role text[], m_permissions text[],
    m_pub text[], m_priv text[], m_created_at timestamptz[], m_updated_at timestamptz[], m_raw text[],
    m_version_at timestamptz[], m_version_id text[],
    md_id text[], md_at timestamptz[],
    -- The events whose version the plan kept (svix-id, kind and id of their object): each was
    -- recorded 'applied' and becomes 'stale' if its row was not written or is a tombstone.
    e_svix_id text[], e_kind "char"[], e_object_id text[]
) RETURNS TABLE (written_kind "char", written_id text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    alive_o text[] := '{}';
    alive_u text[] := '{}';
    alive_m text[] := '{}';
    cascade_ids text[];
BEGIN
    -- A membership written by one batch while another deletes its user or organization: each
    -- transaction's cascade runs before the other commits, so neither sees the other's row and
    -- the membership would stay alive (write skew under READ COMMITTED). Transaction-scoped
    -- advisory locks serialize exactly those pairs: exclusive on each user and organization
    -- deleted here, shared on the user and organization of each membership written here (shared
    -- locks do not wait on each other). All are taken first, in one sorted pass, so they cannot
    -- deadlock with each other.
    IF cardinality(ud_id) > 0 OR cardinality(od_id) > 0 OR cardinality(m_id) > 0 THEN
        PERFORM CASE WHEN k.exclusive THEN pg_advisory_xact_lock(k.class, k.key)
                     ELSE pg_advisory_xact_lock_shared(k.class, k.key) END
        FROM (SELECT l.class, l.key, bool_or(l.exclusive) AS exclusive
              FROM (SELECT 1 AS class, hashtext(x) AS key, true AS exclusive FROM unnest(ud_id) AS x
                    UNION ALL SELECT 2, hashtext(x), true FROM unnest(od_id) AS x
                    UNION ALL SELECT 1, hashtext(x), false FROM unnest(m_user_id) AS x WHERE x IS NOT NULL
                    UNION ALL SELECT 2, hashtext(x), false FROM unnest(m_organization_id) AS x WHERE x IS NOT NULL
                   ) AS l
              GROUP BY l.class, l.key
              ORDER BY l.class, l.key) AS k;
    END IF;

    IF cardinality(o_id) > 0 THEN
        WITH w AS (
            INSERT INTO clerk.organizations AS o (id, name, slug, image_url, created_by, members_count,
                max_allowed_memberships, public_metadata, private_metadata, created_at, updated_at, raw, synced_at,
                nested, version_at, version_svix_id)
            SELECT x.id, x.name, x.slug, x.image_url, x.created_by, x.members_count, x.max_allowed, x.pub::jsonb,
                x.priv::jsonb, x.created_at, x.updated_at, x.raw::jsonb, now(), x.nested, x.version_at, x.version_id
            FROM unnest(o_id, o_name, o_slug, o_image_url, o_created_by, o_members_count, o_max_allowed, o_pub,
                o_priv, o_created_at, o_updated_at, o_raw, o_nested, o_version_at, o_version_id)
                AS x(id, name, slug, image_url, created_by, members_count, max_allowed, pub, priv, created_at,
                     updated_at, raw, nested, version_at, version_id)
            WHERE NOT EXISTS (SELECT 1 FROM clerk.organizations AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), NOT c.nested, coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, NOT x.nested, coalesce(x.version_at, '-infinity'), x.version_id COLLATE "C"))
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
        SELECT coalesce(array_agg(w.id) FILTER (WHERE w.alive), '{}') INTO alive_o FROM w;
    END IF;

    IF cardinality(od_id) > 0 THEN
        INSERT INTO clerk.organizations AS t (id, deleted_at, synced_at)
        SELECT x.id, x.deleted_at, now() FROM unnest(od_id, od_at) AS x(id, deleted_at) ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            name = NULL, slug = NULL, image_url = NULL, public_metadata = NULL, private_metadata = NULL,
            raw = NULL, synced_at = now();
    END IF;

    IF cardinality(u_id) > 0 THEN
        WITH w AS (
            INSERT INTO clerk.users AS u (id, external_id, username, first_name, last_name, primary_email_address,
                primary_phone_number, image_url, public_metadata, private_metadata, unsafe_metadata, banned, locked,
                last_sign_in_at, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.external_id, x.username, x.first_name, x.last_name, x.email, x.phone, x.image_url,
                x.pub::jsonb, x.priv::jsonb, x.uns::jsonb, x.banned, x.locked, x.last_sign_in_at, x.created_at,
                x.updated_at, x.raw::jsonb, now(), x.version_at, x.version_id
            FROM unnest(u_id, u_external_id, u_username, u_first_name, u_last_name, u_email, u_phone, u_image_url,
                u_pub, u_priv, u_uns, u_banned, u_locked, u_last_sign_in_at, u_created_at, u_updated_at, u_raw,
                u_version_at, u_version_id)
                AS x(id, external_id, username, first_name, last_name, email, phone, image_url, pub, priv, uns,
                     banned, locked, last_sign_in_at, created_at, updated_at, raw, version_at, version_id)
            WHERE NOT EXISTS (SELECT 1 FROM clerk.users AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_id COLLATE "C"))
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
        SELECT coalesce(array_agg(w.id) FILTER (WHERE w.alive), '{}') INTO alive_u FROM w;
    END IF;

    IF cardinality(ud_id) > 0 THEN
        INSERT INTO clerk.users AS t (id, external_id, deleted_external_id, deleted_at, synced_at)
        SELECT x.id, x.external_id, x.external_id, x.deleted_at, now()
        FROM unnest(ud_id, ud_external_id, ud_at) AS x(id, external_id, deleted_at) ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            external_id = COALESCE(EXCLUDED.external_id, t.external_id),
            deleted_external_id = COALESCE(EXCLUDED.deleted_external_id, t.deleted_external_id),
            username = NULL, first_name = NULL, last_name = NULL, primary_email_address = NULL,
            primary_phone_number = NULL, image_url = NULL, public_metadata = NULL, private_metadata = NULL,
            unsafe_metadata = NULL, last_sign_in_at = NULL, raw = NULL, synced_at = now();
    END IF;

    IF cardinality(m_id) > 0 THEN
        WITH w AS (
            INSERT INTO clerk.organization_memberships AS m (id, organization_id, user_id, role, permissions,
                public_metadata, private_metadata, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.organization_id, x.user_id, x.role,
                CASE WHEN x.permissions IS NULL THEN NULL
                     ELSE ARRAY(SELECT jsonb_array_elements_text(x.permissions::jsonb)) END,
                x.pub::jsonb, x.priv::jsonb, x.created_at, x.updated_at, x.raw::jsonb, now(), x.version_at, x.version_id
            FROM unnest(m_id, m_organization_id, m_user_id, m_role, m_permissions, m_pub, m_priv, m_created_at,
                m_updated_at, m_raw, m_version_at, m_version_id)
                AS x(id, organization_id, user_id, role, permissions, pub, priv, created_at, updated_at, raw,
                     version_at, version_id)
            WHERE NOT EXISTS (SELECT 1 FROM clerk.organization_memberships AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_id COLLATE "C"))
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
        SELECT coalesce(array_agg(w.id) FILTER (WHERE w.alive), '{}') INTO alive_m FROM w;
    END IF;

    IF cardinality(md_id) > 0 THEN
        INSERT INTO clerk.organization_memberships AS t (id, deleted_at, synced_at)
        SELECT x.id, x.deleted_at, now() FROM unnest(md_id, md_at) AS x(id, deleted_at) ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            public_metadata = NULL, private_metadata = NULL, raw = NULL, synced_at = now();
    END IF;

    -- Memberships of a tombstoned user or organization: those of the users and organizations
    -- deleted in this batch, and those written in this batch whose user or organization was
    -- deleted before. The earliest deletion wins (of the membership's own, its user's and its
    -- organization's), as for the rows themselves. The candidates are gathered into an array
    -- first so that both statements below find them by primary key.
    IF cardinality(ud_id) > 0 OR cardinality(od_id) > 0 OR cardinality(m_id) > 0 THEN
        SELECT coalesce(array_agg(DISTINCT t.id), '{}') INTO cascade_ids
        FROM (SELECT a.id FROM clerk.organization_memberships AS a WHERE a.user_id = ANY (ud_id)
              UNION ALL SELECT b.id FROM clerk.organization_memberships AS b WHERE b.organization_id = ANY (od_id)
              UNION ALL SELECT x FROM unnest(m_id) AS x) AS t;
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

    -- The worker recorded each event's likely outcome (stale unless newest in its batch); correct
    -- those the writes decided otherwise, usually a few guard refusals. Updating only rows that
    -- change keeps this from rewriting a quarter of each batch's dedup rows.
    UPDATE clerk.webhook_events AS e SET outcome = s.final
    FROM (SELECT x.svix_id,
                 CASE WHEN x.object_id = ANY (CASE x.kind WHEN 'o' THEN alive_o
                                                          WHEN 'u' THEN alive_u
                                                          ELSE alive_m END)
                      THEN 'applied' ELSE 'stale' END AS final
          FROM unnest(e_svix_id, e_kind, e_object_id) AS x(svix_id, kind, object_id)) AS s
    WHERE e.svix_id = s.svix_id AND e.outcome IS DISTINCT FROM s.final;

    RETURN QUERY SELECT 'o'::"char", unnest(alive_o)
        UNION ALL SELECT 'u'::"char", unnest(alive_u)
        UNION ALL SELECT 'm'::"char", unnest(alive_m);
END
$fn$;

