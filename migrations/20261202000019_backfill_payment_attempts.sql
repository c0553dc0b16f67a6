-- `clerk-sync backfill` and `clerk-sync reconcile` of payment attempts (issue 19). Clerk's Backend
-- API has no list of every payment attempt; it lists Billing statements
-- (`GET /v1/billing/statements`) and each statement's attempts
-- (`GET /v1/billing/statements/<id>/payment_attempts`). Statements are not stored here, so the
-- walk reads them from Clerk in its order and `parent_cursor` says how many are done
-- (`statements:<n>`), `next_offset` the offset within the next one's attempts.

ALTER TABLE clerk.backfill_progress DROP CONSTRAINT IF EXISTS backfill_progress_resource_check;
ALTER TABLE clerk.backfill_progress ADD CONSTRAINT backfill_progress_resource_check CHECK (resource IN (
    'users', 'organizations', 'memberships', 'sessions', 'invitations', 'roles', 'permissions', 'domains',
    'waitlist_entries', 'subscriptions', 'subscription_items', 'payment_attempts'));
