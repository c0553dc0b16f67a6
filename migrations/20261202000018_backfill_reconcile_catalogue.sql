-- `clerk-sync backfill` and `clerk-sync reconcile` for the resources of issue 19 (migrations 11-14)
-- that Clerk's Backend API lists: sessions, organization invitations, roles, permissions,
-- organization domains, waitlist entries, subscriptions, subscription items.
--
-- 1. `clerk.backfill_progress` accepts their names, and gains `parent_cursor`: a resource listed
--    per parent (sessions per user, invitations and domains per organization, a subscription per
--    user and per organization) walks the parents stored here in id order; `parent_cursor` is the
--    last parent done (`users:<id>` or `organizations:<id>`, NULL: none yet) and `next_offset` the
--    offset within the next one, both written in the transaction of each page's rows, so an
--    interrupted run resumes at the first page not committed.
-- 2. `deleted_by` (as migration 6 gave users, organizations and memberships) on the tables whose
--    objects Clerk deletes: roles, permissions, organization domains. 'reconcile' when
--    `reconcile --fix` made the tombstone because Clerk no longer has the object; NULL when
--    Clerk's own `*.deleted` event did. The apply functions never touch it. The change feed's
--    triggers are generated again so that they know the new column.

ALTER TABLE clerk.backfill_progress DROP CONSTRAINT IF EXISTS backfill_progress_resource_check;
ALTER TABLE clerk.backfill_progress ADD CONSTRAINT backfill_progress_resource_check CHECK (resource IN (
    'users', 'organizations', 'memberships', 'sessions', 'invitations', 'roles', 'permissions', 'domains',
    'waitlist_entries', 'subscriptions', 'subscription_items'));
ALTER TABLE clerk.backfill_progress ADD COLUMN parent_cursor text;

ALTER TABLE clerk.roles ADD COLUMN deleted_by text;
ALTER TABLE clerk.permissions ADD COLUMN deleted_by text;
ALTER TABLE clerk.organization_domains ADD COLUMN deleted_by text;

SELECT clerk.install_change_triggers('roles', 'role');
SELECT clerk.install_change_triggers('permissions', 'permission');
SELECT clerk.install_change_triggers('organization_domains', 'domain');
