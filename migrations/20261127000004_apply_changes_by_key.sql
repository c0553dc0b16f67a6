-- clerk.apply_changes, revised: the same rules as migration 3 (read its header); only how its
-- statements find rows changed. Migration 3 is left as it was, since databases that applied it
-- check its checksum. The outcome correction now only rewrites the rows whose outcome changes
-- (the worker records stale events as stale up front). At the end, the retention index of
-- webhook_events becomes BRIN.
--
-- * The membership cascade looks memberships up by key: as one join, the planner scanned the whole
--   memberships table twice per batch (33 ms at 16,000 memberships).
-- * Every statement here looks up at most a batch's worth of keys in tables that only grow, but
--   PL/pgSQL caches a generic plan, costed with the planner's guess for unnest() of a parameter
--   (10 rows) and the table statistics of the moment: planned while a table is small, the
--   upserts' pre-filter became a hash anti-join over a sequential scan of the whole table, and
--   stayed so as the table grew (the organizations upsert took 4 ms per batch instead of 1 on the
--   benchmark; production tables are far larger). Index lookups are right at any size, so the
--   function turns the other strategies off for its own statements.
CREATE OR REPLACE FUNCTION clerk.apply_changes(
    o_id text[], o_name text[], o_slug text[], o_image_url text[], o_created_by text[],
    o_members_count int4[], o_max_allowed int4[], o_pub text[], o_priv text[],
    o_created_at timestamptz[], o_updated_at timestamptz[], o_raw text[], o_nested bool[],
    od_id text[], od_at timestamptz[],
    u_id text[], u_external_id text[], u_username text[], u_first_name text[], u_last_name text[],
    u_email text[], u_phone text[], u_image_url text[], u_pub text[], u_priv text[], u_uns text[],
    u_banned bool[], u_locked bool[], u_last_sign_in_at timestamptz[], u_created_at timestamptz[],
    u_updated_at timestamptz[], u_raw text[],
    ud_id text[], ud_external_id text[], ud_at timestamptz[],
    m_id text[], m_organization_id text[], m_user_id text[], m_role text[], m_permissions text[],
    m_pub text[], m_priv text[], m_created_at timestamptz[], m_updated_at timestamptz[], m_raw text[],
    md_id text[], md_at timestamptz[],
    -- Fresh upsert events whose recorded outcome may need correcting: svix-id, the kind and id
    -- of their object, and whether their version is the one the plan kept. Such an event is
    -- 'applied' if it is the owner and its row was written and is alive, else 'stale'.
    e_svix_id text[], e_kind "char"[], e_object_id text[], e_owner bool[]
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
                max_allowed_memberships, public_metadata, private_metadata, created_at, updated_at, raw, synced_at)
            SELECT x.id, x.name, x.slug, x.image_url, x.created_by, x.members_count, x.max_allowed, x.pub::jsonb,
                x.priv::jsonb, x.created_at, x.updated_at, x.raw::jsonb, now()
            FROM unnest(o_id, o_name, o_slug, o_image_url, o_created_by, o_members_count, o_max_allowed, o_pub,
                o_priv, o_created_at, o_updated_at, o_raw, o_nested)
                AS x(id, name, slug, image_url, created_by, members_count, max_allowed, pub, priv, created_at,
                     updated_at, raw, nested)
            WHERE NOT EXISTS (SELECT 1 FROM clerk.organizations AS c WHERE c.id = x.id
                AND (c.updated_at > x.updated_at OR (c.updated_at = x.updated_at
                     AND (x.nested OR c.raw IS NOT DISTINCT FROM x.raw::jsonb))))
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
                synced_at = now()
            WHERE o.updated_at IS NULL OR o.updated_at < EXCLUDED.updated_at
                OR (o.updated_at = EXCLUDED.updated_at AND o.raw IS DISTINCT FROM EXCLUDED.raw)
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
                last_sign_in_at, created_at, updated_at, raw, synced_at)
            SELECT x.id, x.external_id, x.username, x.first_name, x.last_name, x.email, x.phone, x.image_url,
                x.pub::jsonb, x.priv::jsonb, x.uns::jsonb, x.banned, x.locked, x.last_sign_in_at, x.created_at,
                x.updated_at, x.raw::jsonb, now()
            FROM unnest(u_id, u_external_id, u_username, u_first_name, u_last_name, u_email, u_phone, u_image_url,
                u_pub, u_priv, u_uns, u_banned, u_locked, u_last_sign_in_at, u_created_at, u_updated_at, u_raw)
                AS x(id, external_id, username, first_name, last_name, email, phone, image_url, pub, priv, uns,
                     banned, locked, last_sign_in_at, created_at, updated_at, raw)
            WHERE NOT EXISTS (SELECT 1 FROM clerk.users AS c WHERE c.id = x.id
                AND (c.updated_at > x.updated_at
                     OR (c.updated_at = x.updated_at AND c.raw IS NOT DISTINCT FROM x.raw::jsonb)))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                external_id = EXCLUDED.external_id,
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
                synced_at = now()
            WHERE u.updated_at IS NULL OR u.updated_at < EXCLUDED.updated_at
                OR (u.updated_at = EXCLUDED.updated_at AND u.raw IS DISTINCT FROM EXCLUDED.raw)
            RETURNING u.id, u.deleted_at IS NULL AS alive
        )
        SELECT coalesce(array_agg(w.id) FILTER (WHERE w.alive), '{}') INTO alive_u FROM w;
    END IF;

    IF cardinality(ud_id) > 0 THEN
        INSERT INTO clerk.users AS t (id, external_id, deleted_at, synced_at)
        SELECT x.id, x.external_id, x.deleted_at, now()
        FROM unnest(ud_id, ud_external_id, ud_at) AS x(id, external_id, deleted_at) ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            external_id = COALESCE(EXCLUDED.external_id, t.external_id),
            username = NULL, first_name = NULL, last_name = NULL, primary_email_address = NULL,
            primary_phone_number = NULL, image_url = NULL, public_metadata = NULL, private_metadata = NULL,
            unsafe_metadata = NULL, last_sign_in_at = NULL, raw = NULL, synced_at = now();
    END IF;

    IF cardinality(m_id) > 0 THEN
        WITH w AS (
            INSERT INTO clerk.organization_memberships AS m (id, organization_id, user_id, role, permissions,
                public_metadata, private_metadata, created_at, updated_at, raw, synced_at)
            SELECT x.id, x.organization_id, x.user_id, x.role,
                CASE WHEN x.permissions IS NULL THEN NULL
                     ELSE ARRAY(SELECT jsonb_array_elements_text(x.permissions::jsonb)) END,
                x.pub::jsonb, x.priv::jsonb, x.created_at, x.updated_at, x.raw::jsonb, now()
            FROM unnest(m_id, m_organization_id, m_user_id, m_role, m_permissions, m_pub, m_priv, m_created_at,
                m_updated_at, m_raw)
                AS x(id, organization_id, user_id, role, permissions, pub, priv, created_at, updated_at, raw)
            WHERE NOT EXISTS (SELECT 1 FROM clerk.organization_memberships AS c WHERE c.id = x.id
                AND (c.updated_at > x.updated_at
                     OR (c.updated_at = x.updated_at AND c.raw IS NOT DISTINCT FROM x.raw::jsonb)))
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
                synced_at = now()
            WHERE m.updated_at IS NULL OR m.updated_at < EXCLUDED.updated_at
                OR (m.updated_at = EXCLUDED.updated_at AND m.raw IS DISTINCT FROM EXCLUDED.raw)
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
                 CASE WHEN x.owner AND x.object_id = ANY (CASE x.kind WHEN 'o' THEN alive_o
                                                                      WHEN 'u' THEN alive_u
                                                                      ELSE alive_m END)
                      THEN 'applied' ELSE 'stale' END AS final
          FROM unnest(e_svix_id, e_kind, e_object_id, e_owner) AS x(svix_id, kind, object_id, owner)) AS s
    WHERE e.svix_id = s.svix_id AND e.outcome IS DISTINCT FROM s.final;

    RETURN QUERY SELECT 'o'::"char", unnest(alive_o)
        UNION ALL SELECT 'u'::"char", unnest(alive_u)
        UNION ALL SELECT 'm'::"char", unnest(alive_m);
END
$fn$;

-- `webhook_events.received_at` only serves the retention prune, which deletes the oldest rows in
-- range order. Rows arrive in roughly received_at order, so a BRIN index finds them as well, and
-- maintaining it costs the dedup insert almost nothing (a B-tree insert is ~1.3 us per row, about
-- 15% of that insert).
DROP INDEX clerk.webhook_events_received_at_idx;
CREATE INDEX webhook_events_received_at_brin ON clerk.webhook_events USING brin (received_at);
