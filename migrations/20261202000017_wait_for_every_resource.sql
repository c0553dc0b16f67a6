-- "Wait for sync" for every stored resource (issue 19). Migration 10's `clerk.wait_for` knew only
-- `user`, `organization` and `membership`; migrations 11 to 14 added nine tables. It now takes
-- every name `clerk.changes` uses for a resource (migration 11's check on `clerk.changes.resource`,
-- and `Resource::as_sql` in Rust), each mapped to its table. Every one of those tables has
-- `updated_at` (Clerk's version of the object, the one the ordering guard compares) and
-- `deleted_at`, so the test is the same for all: the row is at `version` or newer, or it is a
-- tombstone. For the tables Clerk never deletes from (sessions, invitations, waitlist entries,
-- billing), `deleted_at` is set when the user the row belongs to is deleted: that row is as synced
-- as it will ever get, like a membership tombstoned with its user.
--
-- Same signature, same semantics otherwise (poll every 10 ms, false after `timeout`, READ
-- COMMITTED: call it outside a REPEATABLE READ transaction); an unknown resource name raises.

CREATE OR REPLACE FUNCTION clerk.wait_for(resource text, id text, version timestamptz, timeout interval DEFAULT '10 seconds')
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    deadline constant timestamptz := clock_timestamp() + timeout;
    tbl constant text := CASE resource
        WHEN 'user' THEN 'users'
        WHEN 'organization' THEN 'organizations'
        WHEN 'membership' THEN 'organization_memberships'
        WHEN 'session' THEN 'sessions'
        WHEN 'invitation' THEN 'organization_invitations'
        WHEN 'role' THEN 'roles'
        WHEN 'permission' THEN 'permissions'
        WHEN 'domain' THEN 'organization_domains'
        WHEN 'waitlist_entry' THEN 'waitlist_entries'
        WHEN 'subscription' THEN 'subscriptions'
        WHEN 'subscription_item' THEN 'subscription_items'
        WHEN 'payment_attempt' THEN 'payment_attempts'
    END;
    reached boolean;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'unknown resource %', resource
            USING HINT = 'user, organization, membership, session, invitation, role, permission, domain, '
                         'waitlist_entry, subscription, subscription_item or payment_attempt';
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
