-- Roles, permissions, organization domains and the waitlist (issue 19): `role.*`,
-- `permission.*`, `organizationDomain.*`, `waitlistEntry.*`.
--
-- Each table follows `clerk.apply_users` (migration 9): one total order of versions (`updated_at`,
-- the envelope time, the svix-id), the pre-filter and `ON CONFLICT ... WHERE` with the same row
-- comparison, the `clerk.reproject` switch, tombstones for the types Clerk deletes (`role.deleted`,
-- `permission.deleted`, `organizationDomain.deleted` carry a DeletedObject: the earliest deletion
-- wins, a later update never revives the row and only refreshes what is not personal).
--
-- - `clerk.roles.permissions` holds the role's permission keys (`org:posts:create`, ...), the
--   column authorization checks and RLS policies read; the full permission objects stay in `raw`.
-- - `clerk.organization_domains`: `verification_status`/`verification_strategy` are read from
--   `verification` (Clerk's deprecated but still sent field) or, when absent, from
--   `affiliation_verification`; `affiliation_email_address` is personal (removed by deletion).
-- - `clerk.waitlist_entries`: Clerk does not delete them. A user's deletion removes the address
--   (and `raw`) of the entries with one of the deleted user's addresses (the driver reads them
--   before the user's tombstone removes them), `deleted_at` set to the time of that write.
--
-- None has a final status: a role, a permission, a domain or an entry may move either way.

CREATE TABLE clerk.roles (
    id text PRIMARY KEY,
    key text,
    name text,
    description text,
    is_creator_eligible boolean,
    permissions text[],
    created_at timestamptz,
    updated_at timestamptz,
    deleted_at timestamptz,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    version_at timestamptz,
    version_svix_id text COLLATE "C"
);
CREATE INDEX roles_key_idx ON clerk.roles (key);
SELECT clerk.install_change_triggers('roles', 'role');

CREATE TABLE clerk.permissions (
    id text PRIMARY KEY,
    key text,
    name text,
    description text,
    type text,
    created_at timestamptz,
    updated_at timestamptz,
    deleted_at timestamptz,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    version_at timestamptz,
    version_svix_id text COLLATE "C"
);
SELECT clerk.install_change_triggers('permissions', 'permission');

CREATE TABLE clerk.organization_domains (
    id text PRIMARY KEY,
    organization_id text,
    name text,
    enrollment_mode text,
    verification_status text,
    verification_strategy text,
    affiliation_email_address text,
    total_pending_invitations integer,
    total_pending_suggestions integer,
    created_at timestamptz,
    updated_at timestamptz,
    deleted_at timestamptz,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    version_at timestamptz,
    version_svix_id text COLLATE "C"
);
CREATE INDEX organization_domains_organization_id_idx ON clerk.organization_domains (organization_id);
CREATE INDEX organization_domains_name_idx ON clerk.organization_domains (name);
SELECT clerk.install_change_triggers('organization_domains', 'domain');

CREATE TABLE clerk.waitlist_entries (
    id text PRIMARY KEY,
    email_address text,
    status text,
    is_locked boolean,
    invitation_id text,
    created_at timestamptz,
    updated_at timestamptz,
    deleted_at timestamptz,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    version_at timestamptz,
    version_svix_id text COLLATE "C"
);
CREATE INDEX waitlist_entries_email_idx ON clerk.waitlist_entries (lower(email_address));
SELECT clerk.install_change_triggers('waitlist_entries', 'waitlist_entry');

CREATE FUNCTION clerk.apply_roles(batch jsonb) RETURNS SETOF text
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
            INSERT INTO clerk.roles AS t (id, key, name, description, is_creator_eligible, permissions, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.key, x.name, x.description, x.is_creator_eligible, x.permissions, x.created_at, x.updated_at, x.raw, now(), x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.roles, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.roles AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                key = EXCLUDED.key,
                name = EXCLUDED.name,
                description = EXCLUDED.description,
                is_creator_eligible = EXCLUDED.is_creator_eligible,
                permissions = EXCLUDED.permissions,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                raw = CASE WHEN t.deleted_at IS NULL THEN EXCLUDED.raw END,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING t.id, t.deleted_at IS NULL AS alive
        )
        SELECT w.id FROM w WHERE w.alive;
    END IF;

    IF jsonb_array_length(batch -> 'deletions') > 0 THEN
        INSERT INTO clerk.roles AS t (id, deleted_at, synced_at)
        SELECT x.id, x.deleted_at, now()
        FROM jsonb_populate_recordset(NULL::clerk.roles, batch -> 'deletions') AS x ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            raw = NULL, synced_at = now();
    END IF;
END
$fn$;

CREATE FUNCTION clerk.apply_permissions(batch jsonb) RETURNS SETOF text
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
            INSERT INTO clerk.permissions AS t (id, key, name, description, type, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.key, x.name, x.description, x.type, x.created_at, x.updated_at, x.raw, now(), x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.permissions, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.permissions AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                key = EXCLUDED.key,
                name = EXCLUDED.name,
                description = EXCLUDED.description,
                type = EXCLUDED.type,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                raw = CASE WHEN t.deleted_at IS NULL THEN EXCLUDED.raw END,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING t.id, t.deleted_at IS NULL AS alive
        )
        SELECT w.id FROM w WHERE w.alive;
    END IF;

    IF jsonb_array_length(batch -> 'deletions') > 0 THEN
        INSERT INTO clerk.permissions AS t (id, deleted_at, synced_at)
        SELECT x.id, x.deleted_at, now()
        FROM jsonb_populate_recordset(NULL::clerk.permissions, batch -> 'deletions') AS x ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            raw = NULL, synced_at = now();
    END IF;
END
$fn$;

CREATE FUNCTION clerk.apply_domains(batch jsonb) RETURNS SETOF text
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
            INSERT INTO clerk.organization_domains AS t (id, organization_id, name, enrollment_mode, verification_status, verification_strategy, affiliation_email_address, total_pending_invitations, total_pending_suggestions, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.organization_id, x.name, x.enrollment_mode, x.verification_status, x.verification_strategy, x.affiliation_email_address, x.total_pending_invitations, x.total_pending_suggestions, x.created_at, x.updated_at, x.raw, now(), x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.organization_domains, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.organization_domains AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                organization_id = EXCLUDED.organization_id,
                name = EXCLUDED.name,
                enrollment_mode = EXCLUDED.enrollment_mode,
                verification_status = EXCLUDED.verification_status,
                verification_strategy = EXCLUDED.verification_strategy,
                affiliation_email_address = CASE WHEN t.deleted_at IS NULL THEN EXCLUDED.affiliation_email_address END,
                total_pending_invitations = EXCLUDED.total_pending_invitations,
                total_pending_suggestions = EXCLUDED.total_pending_suggestions,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                raw = CASE WHEN t.deleted_at IS NULL THEN EXCLUDED.raw END,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING t.id, t.deleted_at IS NULL AS alive
        )
        SELECT w.id FROM w WHERE w.alive;
    END IF;

    IF jsonb_array_length(batch -> 'deletions') > 0 THEN
        INSERT INTO clerk.organization_domains AS t (id, deleted_at, synced_at)
        SELECT x.id, x.deleted_at, now()
        FROM jsonb_populate_recordset(NULL::clerk.organization_domains, batch -> 'deletions') AS x ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            affiliation_email_address = NULL, raw = NULL, synced_at = now();
    END IF;
END
$fn$;

CREATE FUNCTION clerk.apply_waitlist_entries(batch jsonb, deleted_emails text[]) RETURNS SETOF text
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
            INSERT INTO clerk.waitlist_entries AS t (id, email_address, status, is_locked, invitation_id, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.email_address, x.status, x.is_locked, x.invitation_id, x.created_at, x.updated_at, x.raw, now(), x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.waitlist_entries, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.waitlist_entries AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                email_address = CASE WHEN t.deleted_at IS NULL THEN EXCLUDED.email_address END,
                status = EXCLUDED.status,
                is_locked = EXCLUDED.is_locked,
                invitation_id = EXCLUDED.invitation_id,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                raw = CASE WHEN t.deleted_at IS NULL THEN EXCLUDED.raw END,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING t.id, t.deleted_at IS NULL AS alive
        )
        SELECT w.id FROM w WHERE w.alive;
    END IF;

    -- A deleted user's addresses (read by the driver before the user's tombstone removes them):
    -- the entries of those addresses lose them, dated now (a waitlist entry names no user id).
    IF cardinality(deleted_emails) > 0 THEN
        UPDATE clerk.waitlist_entries AS t SET deleted_at = coalesce(t.deleted_at, now()), email_address = NULL,
            raw = NULL, synced_at = now()
        WHERE t.id = ANY (ARRAY(SELECT w.id FROM clerk.waitlist_entries AS w
                                WHERE lower(w.email_address) = ANY (deleted_emails)));
    END IF;
END
$fn$;


DROP FUNCTION clerk.apply_batch(jsonb, jsonb, jsonb, jsonb, jsonb);

-- The driver (migration 12's, with `roles`, `permissions`, `domains` and `waitlist_entries`): the cross-resource locks, then each resource's
-- function in a fixed order.
CREATE FUNCTION clerk.apply_batch(
    organizations jsonb DEFAULT NULL,
    users jsonb DEFAULT NULL,
    memberships jsonb DEFAULT NULL,
    sessions jsonb DEFAULT NULL,
    invitations jsonb DEFAULT NULL,
    roles jsonb DEFAULT NULL,
    permissions jsonb DEFAULT NULL,
    domains jsonb DEFAULT NULL,
    waitlist_entries jsonb DEFAULT NULL
) RETURNS TABLE (resource text, id text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    empty constant jsonb := '{"upserts": [], "deletions": []}';
    deleted_users text[];
    deleted_organizations text[];
    deleted_emails text[];
BEGIN
    organizations := coalesce(organizations, empty);
    users := coalesce(users, empty);
    memberships := coalesce(memberships, empty);
    sessions := coalesce(sessions, empty);
    invitations := coalesce(invitations, empty);
    roles := coalesce(roles, empty);
    permissions := coalesce(permissions, empty);
    domains := coalesce(domains, empty);
    waitlist_entries := coalesce(waitlist_entries, empty);
    SELECT coalesce(array_agg(x ->> 'id'), '{}') INTO deleted_users
    FROM jsonb_array_elements(users -> 'deletions') AS x;
    SELECT coalesce(array_agg(x ->> 'id'), '{}') INTO deleted_organizations
    FROM jsonb_array_elements(organizations -> 'deletions') AS x;
    -- The addresses of the users deleted here, read before their tombstones remove them: the
    -- invitations sent to them lose their personal data too.
    IF cardinality(deleted_users) > 0 THEN
        SELECT coalesce(array_agg(DISTINCT lower(a.address)), '{}') INTO deleted_emails
        FROM (SELECT u.primary_email_address AS address FROM clerk.users AS u WHERE u.id = ANY (deleted_users)
              UNION ALL SELECT e ->> 'email_address' FROM clerk.users AS u,
                        jsonb_array_elements(CASE WHEN jsonb_typeof(u.raw -> 'email_addresses') = 'array'
                                                  THEN u.raw -> 'email_addresses' ELSE '[]' END) AS e
                        WHERE u.id = ANY (deleted_users)
              UNION ALL SELECT x ->> 'primary_email_address' FROM jsonb_array_elements(users -> 'upserts') AS x
                        WHERE x ->> 'id' = ANY (deleted_users)) AS a
        WHERE a.address IS NOT NULL;
    ELSE
        deleted_emails := '{}';
    END IF;

    -- A row naming a user (a membership, a session) or an organization written by one batch while
    -- another deletes that user or organization: each transaction's cascade runs before the other
    -- commits, so neither sees the other's row and the row would stay alive (write skew under READ
    -- COMMITTED). Transaction-scoped advisory locks serialize exactly those pairs: exclusive on each
    -- user and organization deleted here, shared on the user and organization each such row
    -- written here names (shared locks do not wait on each other). All are taken first, in one
    -- sorted pass, so they cannot deadlock with each other.
    IF cardinality(deleted_users) > 0 OR cardinality(deleted_organizations) > 0
       OR jsonb_array_length(memberships -> 'upserts') > 0 OR jsonb_array_length(sessions -> 'upserts') > 0
       OR jsonb_array_length(invitations -> 'upserts') > 0 THEN
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
                    UNION ALL SELECT 1, hashtext(i ->> k), false
                              FROM jsonb_array_elements(invitations -> 'upserts') AS i, unnest('{user_id,inviter_id}'::text[]) AS k
                              WHERE i ->> k IS NOT NULL
                    -- Class 3: an address, for invitations that name no user yet.
                    UNION ALL SELECT 3, hashtext(x), true FROM unnest(deleted_emails) AS x
                    UNION ALL SELECT 3, hashtext(lower(i ->> 'email_address')), false
                              FROM jsonb_array_elements(invitations -> 'upserts') AS i WHERE i ->> 'email_address' IS NOT NULL
                   ) AS l
              GROUP BY l.class, l.key
              ORDER BY l.class, l.key) AS k;
    END IF;

    RETURN QUERY SELECT 'organization', o FROM clerk.apply_organizations(organizations) AS o;
    RETURN QUERY SELECT 'user', u FROM clerk.apply_users(users) AS u;
    RETURN QUERY SELECT 'membership', m
        FROM clerk.apply_memberships(memberships, deleted_users, deleted_organizations) AS m;
    RETURN QUERY SELECT 'session', s FROM clerk.apply_sessions(sessions, deleted_users) AS s;
    RETURN QUERY SELECT 'invitation', i
        FROM clerk.apply_invitations(invitations, deleted_users, deleted_emails) AS i;
    RETURN QUERY SELECT 'role', r FROM clerk.apply_roles(roles) AS r;
    RETURN QUERY SELECT 'permission', p FROM clerk.apply_permissions(permissions) AS p;
    RETURN QUERY SELECT 'domain', d FROM clerk.apply_domains(domains) AS d;
    RETURN QUERY SELECT 'waitlist_entry', w FROM clerk.apply_waitlist_entries(waitlist_entries, deleted_emails) AS w;
END
$fn$;
