-- Clerk Billing (issue 19): `subscription.*` (the old spelling `subscription.past_due` is parsed as
-- `subscription.pastDue`), `subscriptionItem.*`, `paymentAttempt.*`, to gate features by plan.
--
-- Each table follows `clerk.apply_users` (migration 9): the one total order of versions, the
-- pre-filter and `ON CONFLICT ... WHERE` with the same row comparison, the `clerk.reproject`
-- switch. Clerk deletes none of them and names no final status the issue asks to keep (an item
-- moves from `active` to `canceled` to `ended`, each with a newer version), so the newest version
-- wins whole. The payer is read from `payer` (`user_id` for a user's subscription,
-- `organization_id` for an organization's); amounts are in the currency's minor unit (`amount`,
-- `currency`: an item's plan's, a payment attempt's `totals.grand_total`).
--
-- A user's deletion (as in migration 11, under the driver's advisory lock on the user) removes
-- `raw` (the payer's name and address) from the rows whose `user_id` is that user, with
-- `deleted_at` = the user's deletion time; rows arriving later for the deleted user too. The ids,
-- statuses, plans and amounts stay: they are the application's accounting, not personal data.

CREATE TABLE clerk.subscriptions (
    id text PRIMARY KEY,
    status text,
    payer_id text,
    user_id text,
    organization_id text,
    latest_payment_id text,
    payment_source_id text,
    active_at timestamptz,
    past_due_at timestamptz,
    canceled_at timestamptz,
    ended_at timestamptz,
    created_at timestamptz,
    updated_at timestamptz,
    -- Set only when the paying user is deleted (Clerk does not delete these): `raw`, which
    -- holds the payer's name and address, is removed then.
    deleted_at timestamptz,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    version_at timestamptz,
    version_svix_id text COLLATE "C"
);
CREATE INDEX subscriptions_user_id_idx ON clerk.subscriptions (user_id);
CREATE INDEX subscriptions_organization_id_idx ON clerk.subscriptions (organization_id);
SELECT clerk.install_change_triggers('subscriptions', 'subscription');

CREATE TABLE clerk.subscription_items (
    id text PRIMARY KEY,
    subscription_id text,
    status text,
    plan_id text,
    plan_slug text,
    plan_name text,
    amount bigint,
    currency text,
    interval text,
    is_free_trial boolean,
    payer_id text,
    user_id text,
    organization_id text,
    period_start timestamptz,
    period_end timestamptz,
    canceled_at timestamptz,
    ended_at timestamptz,
    created_at timestamptz,
    updated_at timestamptz,
    -- Set only when the paying user is deleted (Clerk does not delete these): `raw`, which
    -- holds the payer's name and address, is removed then.
    deleted_at timestamptz,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    version_at timestamptz,
    version_svix_id text COLLATE "C"
);
CREATE INDEX subscription_items_subscription_id_idx ON clerk.subscription_items (subscription_id);
CREATE INDEX subscription_items_user_id_idx ON clerk.subscription_items (user_id);
CREATE INDEX subscription_items_organization_id_idx ON clerk.subscription_items (organization_id);
SELECT clerk.install_change_triggers('subscription_items', 'subscription_item');

CREATE TABLE clerk.payment_attempts (
    id text PRIMARY KEY,
    payment_id text,
    status text,
    charge_type text,
    payer_id text,
    user_id text,
    organization_id text,
    amount bigint,
    currency text,
    billing_date timestamptz,
    paid_at timestamptz,
    failed_at timestamptz,
    statement_id text,
    created_at timestamptz,
    updated_at timestamptz,
    -- Set only when the paying user is deleted (Clerk does not delete these): `raw`, which
    -- holds the payer's name and address, is removed then.
    deleted_at timestamptz,
    raw jsonb,
    synced_at timestamptz NOT NULL DEFAULT now(),
    version_at timestamptz,
    version_svix_id text COLLATE "C"
);
CREATE INDEX payment_attempts_user_id_idx ON clerk.payment_attempts (user_id);
CREATE INDEX payment_attempts_organization_id_idx ON clerk.payment_attempts (organization_id);
SELECT clerk.install_change_triggers('payment_attempts', 'payment_attempt');

CREATE FUNCTION clerk.apply_subscriptions(batch jsonb, deleted_users text[]) RETURNS SETOF text
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
            INSERT INTO clerk.subscriptions AS t (id, status, payer_id, user_id, organization_id, latest_payment_id, payment_source_id, active_at, past_due_at, canceled_at, ended_at, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.status, x.payer_id, x.user_id, x.organization_id, x.latest_payment_id, x.payment_source_id, x.active_at, x.past_due_at, x.canceled_at, x.ended_at, x.created_at, x.updated_at, x.raw, now(), x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.subscriptions, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.subscriptions AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                status = EXCLUDED.status,
                payer_id = EXCLUDED.payer_id,
                user_id = EXCLUDED.user_id,
                organization_id = EXCLUDED.organization_id,
                latest_payment_id = EXCLUDED.latest_payment_id,
                payment_source_id = EXCLUDED.payment_source_id,
                active_at = EXCLUDED.active_at,
                past_due_at = EXCLUDED.past_due_at,
                canceled_at = EXCLUDED.canceled_at,
                ended_at = EXCLUDED.ended_at,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                raw = EXCLUDED.raw,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING t.id
        )
        SELECT coalesce(array_agg(w.id), '{}') INTO written FROM w;
    END IF;

    IF cardinality(deleted_users) > 0 OR jsonb_array_length(batch -> 'upserts') > 0 THEN
        SELECT coalesce(array_agg(DISTINCT s.id), '{}') INTO cascade_ids
        FROM (SELECT a.id FROM clerk.subscriptions AS a WHERE a.user_id = ANY (deleted_users)
              UNION ALL SELECT x ->> 'id' FROM jsonb_array_elements(batch -> 'upserts') AS x) AS s;
        WITH p AS MATERIALIZED (
            SELECT c.id, (SELECT u.deleted_at FROM clerk.users AS u WHERE u.id = c.user_id) AS deleted_at
            FROM clerk.subscriptions AS c
            WHERE c.id = ANY (cascade_ids)
        )
        UPDATE clerk.subscriptions AS t SET deleted_at = LEAST(t.deleted_at, p.deleted_at), raw = NULL, synced_at = now()
        FROM p
        WHERE t.id = ANY (cascade_ids) AND t.id = p.id AND p.deleted_at IS NOT NULL
          AND (t.deleted_at IS NULL OR t.deleted_at > p.deleted_at OR t.raw IS NOT NULL);
    END IF;

    RETURN QUERY SELECT unnest(written);
END
$fn$;

CREATE FUNCTION clerk.apply_subscription_items(batch jsonb, deleted_users text[]) RETURNS SETOF text
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
            INSERT INTO clerk.subscription_items AS t (id, subscription_id, status, plan_id, plan_slug, plan_name, amount, currency, interval, is_free_trial, payer_id, user_id, organization_id, period_start, period_end, canceled_at, ended_at, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.subscription_id, x.status, x.plan_id, x.plan_slug, x.plan_name, x.amount, x.currency, x.interval, x.is_free_trial, x.payer_id, x.user_id, x.organization_id, x.period_start, x.period_end, x.canceled_at, x.ended_at, x.created_at, x.updated_at, x.raw, now(), x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.subscription_items, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.subscription_items AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                subscription_id = EXCLUDED.subscription_id,
                status = EXCLUDED.status,
                plan_id = EXCLUDED.plan_id,
                plan_slug = EXCLUDED.plan_slug,
                plan_name = EXCLUDED.plan_name,
                amount = EXCLUDED.amount,
                currency = EXCLUDED.currency,
                interval = EXCLUDED.interval,
                is_free_trial = EXCLUDED.is_free_trial,
                payer_id = EXCLUDED.payer_id,
                user_id = EXCLUDED.user_id,
                organization_id = EXCLUDED.organization_id,
                period_start = EXCLUDED.period_start,
                period_end = EXCLUDED.period_end,
                canceled_at = EXCLUDED.canceled_at,
                ended_at = EXCLUDED.ended_at,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                raw = EXCLUDED.raw,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING t.id
        )
        SELECT coalesce(array_agg(w.id), '{}') INTO written FROM w;
    END IF;

    IF cardinality(deleted_users) > 0 OR jsonb_array_length(batch -> 'upserts') > 0 THEN
        SELECT coalesce(array_agg(DISTINCT s.id), '{}') INTO cascade_ids
        FROM (SELECT a.id FROM clerk.subscription_items AS a WHERE a.user_id = ANY (deleted_users)
              UNION ALL SELECT x ->> 'id' FROM jsonb_array_elements(batch -> 'upserts') AS x) AS s;
        WITH p AS MATERIALIZED (
            SELECT c.id, (SELECT u.deleted_at FROM clerk.users AS u WHERE u.id = c.user_id) AS deleted_at
            FROM clerk.subscription_items AS c
            WHERE c.id = ANY (cascade_ids)
        )
        UPDATE clerk.subscription_items AS t SET deleted_at = LEAST(t.deleted_at, p.deleted_at), raw = NULL, synced_at = now()
        FROM p
        WHERE t.id = ANY (cascade_ids) AND t.id = p.id AND p.deleted_at IS NOT NULL
          AND (t.deleted_at IS NULL OR t.deleted_at > p.deleted_at OR t.raw IS NOT NULL);
    END IF;

    RETURN QUERY SELECT unnest(written);
END
$fn$;

CREATE FUNCTION clerk.apply_payment_attempts(batch jsonb, deleted_users text[]) RETURNS SETOF text
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
            INSERT INTO clerk.payment_attempts AS t (id, payment_id, status, charge_type, payer_id, user_id, organization_id, amount, currency, billing_date, paid_at, failed_at, statement_id, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.payment_id, x.status, x.charge_type, x.payer_id, x.user_id, x.organization_id, x.amount, x.currency, x.billing_date, x.paid_at, x.failed_at, x.statement_id, x.created_at, x.updated_at, x.raw, now(), x.version_at, x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.payment_attempts, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.payment_attempts AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")
                AND NOT (rewrite AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                                 = (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C")))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                payment_id = EXCLUDED.payment_id,
                status = EXCLUDED.status,
                charge_type = EXCLUDED.charge_type,
                payer_id = EXCLUDED.payer_id,
                user_id = EXCLUDED.user_id,
                organization_id = EXCLUDED.organization_id,
                amount = EXCLUDED.amount,
                currency = EXCLUDED.currency,
                billing_date = EXCLUDED.billing_date,
                paid_at = EXCLUDED.paid_at,
                failed_at = EXCLUDED.failed_at,
                statement_id = EXCLUDED.statement_id,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                raw = EXCLUDED.raw,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
               OR (rewrite AND (coalesce(t.updated_at, '-infinity'), coalesce(t.version_at, '-infinity'),
                   coalesce(t.version_svix_id, '') COLLATE "C")
                   = (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C"))
            RETURNING t.id
        )
        SELECT coalesce(array_agg(w.id), '{}') INTO written FROM w;
    END IF;

    IF cardinality(deleted_users) > 0 OR jsonb_array_length(batch -> 'upserts') > 0 THEN
        SELECT coalesce(array_agg(DISTINCT s.id), '{}') INTO cascade_ids
        FROM (SELECT a.id FROM clerk.payment_attempts AS a WHERE a.user_id = ANY (deleted_users)
              UNION ALL SELECT x ->> 'id' FROM jsonb_array_elements(batch -> 'upserts') AS x) AS s;
        WITH p AS MATERIALIZED (
            SELECT c.id, (SELECT u.deleted_at FROM clerk.users AS u WHERE u.id = c.user_id) AS deleted_at
            FROM clerk.payment_attempts AS c
            WHERE c.id = ANY (cascade_ids)
        )
        UPDATE clerk.payment_attempts AS t SET deleted_at = LEAST(t.deleted_at, p.deleted_at), raw = NULL, synced_at = now()
        FROM p
        WHERE t.id = ANY (cascade_ids) AND t.id = p.id AND p.deleted_at IS NOT NULL
          AND (t.deleted_at IS NULL OR t.deleted_at > p.deleted_at OR t.raw IS NOT NULL);
    END IF;

    RETURN QUERY SELECT unnest(written);
END
$fn$;


DROP FUNCTION clerk.apply_batch(jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb);

-- The driver (migration 13's, with `subscriptions`, `subscription_items` and `payment_attempts`): the cross-resource locks, then each resource's
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
    subscriptions := coalesce(subscriptions, empty);
    subscription_items := coalesce(subscription_items, empty);
    payment_attempts := coalesce(payment_attempts, empty);
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
    RETURN QUERY SELECT 'subscription', s FROM clerk.apply_subscriptions(subscriptions, deleted_users) AS s;
    RETURN QUERY SELECT 'subscription_item', s FROM clerk.apply_subscription_items(subscription_items, deleted_users) AS s;
    RETURN QUERY SELECT 'payment_attempt', p FROM clerk.apply_payment_attempts(payment_attempts, deleted_users) AS p;
END
$fn$;
