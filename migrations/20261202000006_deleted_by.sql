-- Who made a tombstone: NULL when Clerk's own `*.deleted` event did, 'reconcile' when
-- `clerk-sync reconcile --fix` did because Clerk no longer has the object (its deletion event was
-- lost) or because a membership's user or organization is deleted here. The reconcile sets it in
-- the same transaction as the deletion; `clerk.apply_changes` never touches it, so it stays.
ALTER TABLE clerk.users ADD COLUMN deleted_by text;
ALTER TABLE clerk.organizations ADD COLUMN deleted_by text;
ALTER TABLE clerk.organization_memberships ADD COLUMN deleted_by text;
