-- The deleted users' addresses carry their deletion times (issue 19). Migrations 12 and 13 passed
-- the invitation and waitlist functions the addresses alone, so a row matched by address was dated
-- by the earliest deletion of its batch (invitations) or by the time of the write (waitlist
-- entries): the same events batched differently ended with different `deleted_at`. The driver now
-- passes `{"<address>": "<its user's deletion time>"}` (the time that user's tombstone gets: the
-- earlier of a stored deletion and the batch's) and both functions date each row by its own
-- address. Same semantics otherwise.

DROP FUNCTION clerk.apply_batch(jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb);
DROP FUNCTION clerk.apply_invitations(jsonb, text[], text[]);
DROP FUNCTION clerk.apply_waitlist_entries(jsonb, text[]);

CREATE FUNCTION clerk.apply_invitations(batch jsonb, deleted_users text[], deleted_emails jsonb) RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
DECLARE
    rewrite constant boolean := coalesce(current_setting('clerk.reproject', true), '') = 'on';
    written text[] := '{}';
    finals text[] := '{}';
    cascade_ids text[];
BEGIN
    IF jsonb_array_length(batch -> 'upserts') > 0 THEN
        WITH w AS (
            INSERT INTO clerk.organization_invitations AS s (id, organization_id, email_address, role, status,
                inviter_id, user_id, public_metadata, private_metadata, expires_at, created_at, updated_at, raw,
                synced_at, version_at, version_svix_id)
            SELECT x.id, x.organization_id, x.email_address, x.role, x.status, x.inviter_id, x.user_id,
                x.public_metadata, x.private_metadata, x.expires_at, x.created_at, x.updated_at, x.raw, now(),
                x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.organization_invitations, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.organization_invitations AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                organization_id = EXCLUDED.organization_id,
                email_address = CASE WHEN s.deleted_at IS NULL THEN EXCLUDED.email_address END,
                role = EXCLUDED.role,
                status = CASE WHEN clerk.invitation_final_rank(s.status) > clerk.invitation_final_rank(EXCLUDED.status)
                              THEN s.status ELSE EXCLUDED.status END,
                inviter_id = EXCLUDED.inviter_id,
                user_id = coalesce(EXCLUDED.user_id, s.user_id),
                public_metadata = CASE WHEN s.deleted_at IS NULL THEN EXCLUDED.public_metadata END,
                private_metadata = CASE WHEN s.deleted_at IS NULL THEN EXCLUDED.private_metadata END,
                expires_at = EXCLUDED.expires_at,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                raw = CASE WHEN s.deleted_at IS NULL THEN EXCLUDED.raw END,
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

        -- A final status that came with an older version than the one stored: the status alone
        -- (and the accepting user).
        WITH f AS (
            UPDATE clerk.organization_invitations AS s
            SET status = x.status, user_id = coalesce(s.user_id, x.user_id), synced_at = now()
            FROM jsonb_populate_recordset(NULL::clerk.organization_invitations, batch -> 'upserts') AS x
            WHERE s.id = x.id AND clerk.invitation_final_rank(x.status) > clerk.invitation_final_rank(s.status)
            RETURNING s.id
        )
        SELECT coalesce(array_agg(f.id), '{}') INTO finals FROM f;
    END IF;

    IF cardinality(deleted_users) > 0 OR jsonb_array_length(batch -> 'upserts') > 0 THEN
        SELECT coalesce(array_agg(DISTINCT t.id), '{}') INTO cascade_ids
        FROM (SELECT a.id FROM clerk.organization_invitations AS a WHERE a.user_id = ANY (deleted_users)
              UNION ALL SELECT b.id FROM clerk.organization_invitations AS b WHERE b.inviter_id = ANY (deleted_users)
              UNION ALL SELECT c.id FROM clerk.organization_invitations AS c
                        WHERE lower(c.email_address) = ANY (ARRAY(SELECT jsonb_object_keys(deleted_emails)))
              UNION ALL SELECT x ->> 'id' FROM jsonb_array_elements(batch -> 'upserts') AS x) AS t;
        WITH p AS MATERIALIZED (
            SELECT c.id,
                   LEAST((SELECT u.deleted_at FROM clerk.users AS u WHERE u.id = c.user_id),
                         (deleted_emails ->> lower(c.email_address))::timestamptz)
                       AS invitee_deleted_at,
                   (SELECT u.deleted_at FROM clerk.users AS u WHERE u.id = c.inviter_id) AS inviter_deleted_at
            FROM clerk.organization_invitations AS c
            WHERE c.id = ANY (cascade_ids)
        )
        UPDATE clerk.organization_invitations AS s SET
            deleted_at = CASE WHEN p.invitee_deleted_at IS NULL THEN s.deleted_at
                              ELSE LEAST(s.deleted_at, p.invitee_deleted_at) END,
            email_address = CASE WHEN p.invitee_deleted_at IS NULL THEN s.email_address END,
            public_metadata = CASE WHEN p.invitee_deleted_at IS NULL THEN s.public_metadata END,
            private_metadata = CASE WHEN p.invitee_deleted_at IS NULL THEN s.private_metadata END,
            raw = NULL, synced_at = now()
        FROM p
        WHERE s.id = ANY (cascade_ids) AND s.id = p.id
          AND (p.invitee_deleted_at IS NOT NULL OR p.inviter_deleted_at IS NOT NULL)
          AND (s.raw IS NOT NULL OR (p.invitee_deleted_at IS NOT NULL
               AND (s.deleted_at IS NULL OR s.deleted_at > p.invitee_deleted_at OR s.email_address IS NOT NULL
                    OR s.public_metadata IS NOT NULL OR s.private_metadata IS NOT NULL)));
    END IF;

    RETURN QUERY SELECT DISTINCT unnest(written || finals);
END
$fn$;


CREATE FUNCTION clerk.apply_waitlist_entries(batch jsonb, deleted_emails jsonb) RETURNS SETOF text
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

    -- A deleted user's addresses (read by the driver before the user's tombstone removes them),
    -- each with its user's deletion time: the entries of those addresses lose them.
    IF deleted_emails <> '{}' THEN
        UPDATE clerk.waitlist_entries AS t
        SET deleted_at = LEAST(t.deleted_at, (deleted_emails ->> lower(t.email_address))::timestamptz),
            email_address = NULL, raw = NULL, synced_at = now()
        WHERE t.id = ANY (ARRAY(SELECT w.id FROM clerk.waitlist_entries AS w
                                WHERE lower(w.email_address) = ANY (ARRAY(SELECT jsonb_object_keys(deleted_emails)))));
    END IF;
END
$fn$;


-- The driver (migration 14's; the deleted users' addresses now carry their deletion times): the cross-resource locks, then each resource's
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
    waitlist_entries jsonb DEFAULT NULL,
    subscriptions jsonb DEFAULT NULL,
    subscription_items jsonb DEFAULT NULL,
    payment_attempts jsonb DEFAULT NULL
) RETURNS TABLE (resource text, id text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    empty constant jsonb := '{"upserts": [], "deletions": []}';
    deleted_users text[];
    deleted_organizations text[];
    deleted_emails jsonb;
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
    subscriptions := coalesce(subscriptions, empty);
    subscription_items := coalesce(subscription_items, empty);
    payment_attempts := coalesce(payment_attempts, empty);
    SELECT coalesce(array_agg(x ->> 'id'), '{}') INTO deleted_users
    FROM jsonb_array_elements(users -> 'deletions') AS x;
    SELECT coalesce(array_agg(x ->> 'id'), '{}') INTO deleted_organizations
    FROM jsonb_array_elements(organizations -> 'deletions') AS x;
    -- The addresses of the users deleted here, read before their tombstones remove them: the
    -- invitations sent to them lose their personal data too.
    -- Each address with the deletion time its user's tombstone will have (the earlier of a stored
    -- deletion and this batch's), so that every batching of the same events dates the rows alike.
    IF cardinality(deleted_users) > 0 THEN
        WITH d AS (
            SELECT x ->> 'id' AS id, (x ->> 'deleted_at')::timestamptz AS deleted_at
            FROM jsonb_array_elements(users -> 'deletions') AS x
        ), a AS (
            SELECT d.id, LEAST(u.deleted_at, d.deleted_at) AS deleted_at, u.primary_email_address AS address
            FROM d LEFT JOIN clerk.users AS u ON u.id = d.id
            UNION ALL SELECT d.id, LEAST(u.deleted_at, d.deleted_at), e ->> 'email_address'
            FROM d JOIN clerk.users AS u ON u.id = d.id,
                 jsonb_array_elements(CASE WHEN jsonb_typeof(u.raw -> 'email_addresses') = 'array'
                                           THEN u.raw -> 'email_addresses' ELSE '[]' END) AS e
            UNION ALL SELECT d.id, LEAST((SELECT u.deleted_at FROM clerk.users AS u WHERE u.id = d.id), d.deleted_at),
                             x ->> 'primary_email_address'
            FROM d JOIN jsonb_array_elements(users -> 'upserts') AS x ON x ->> 'id' = d.id
        )
        SELECT coalesce(jsonb_object_agg(g.address, g.deleted_at), '{}') INTO deleted_emails
        FROM (SELECT lower(a.address) AS address, min(a.deleted_at) AS deleted_at FROM a
              WHERE a.address IS NOT NULL GROUP BY 1) AS g;
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
       OR jsonb_array_length(invitations -> 'upserts') > 0 OR jsonb_array_length(subscriptions -> 'upserts') > 0
       OR jsonb_array_length(subscription_items -> 'upserts') > 0 OR jsonb_array_length(payment_attempts -> 'upserts') > 0 THEN
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
                    UNION ALL SELECT 1, hashtext(b ->> 'user_id'), false
                              FROM (SELECT jsonb_array_elements(subscriptions -> 'upserts')
                                    UNION ALL SELECT jsonb_array_elements(subscription_items -> 'upserts')
                                    UNION ALL SELECT jsonb_array_elements(payment_attempts -> 'upserts')) AS f(b)
                              WHERE b ->> 'user_id' IS NOT NULL
                    -- Class 3: an address, for invitations that name no user yet.
                    UNION ALL SELECT 3, hashtext(x), true FROM jsonb_object_keys(deleted_emails) AS x
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
    RETURN QUERY SELECT 'subscription', s FROM clerk.apply_subscriptions(subscriptions, deleted_users) AS s;
    RETURN QUERY SELECT 'subscription_item', s FROM clerk.apply_subscription_items(subscription_items, deleted_users) AS s;
    RETURN QUERY SELECT 'payment_attempt', p FROM clerk.apply_payment_attempts(payment_attempts, deleted_users) AS p;
END
$fn$;
