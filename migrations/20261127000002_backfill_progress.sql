-- Where `clerk-sync backfill` stands for each resource, so an interrupted run resumes where it
-- stopped. Written in the same transaction as each page's rows.
CREATE TABLE clerk.backfill_progress (
    resource     text PRIMARY KEY CHECK (resource IN ('users', 'organizations', 'memberships')),
    next_offset  integer NOT NULL DEFAULT 0,
    written      bigint NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
