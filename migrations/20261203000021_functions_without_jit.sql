-- JIT compilation off in every function that pins its plans to indexes.
--
-- The apply functions (migration 7 and after), the history's deleted-user lookup (16) and the
-- sequencer round (20) turn sequential scans off so that a plan cached while a table looked empty
-- cannot keep scanning it once it has grown. A disabled plan type is not removed, it is costed at
-- 10^10, so a statement that still has one (a one-row table without a usable index, such as
-- `clerk.change_feed_state`, or a scan of a set-returning function under a disabled join) is
-- costed far above `jit_above_cost` (100,000 by default), and PostgreSQL compiles it with LLVM
-- on every execution: 30-80 ms of compilation per statement for a statement that runs in
-- microseconds. That was most of the database's time on the apply path and most of the change
-- feed's latency (docs/benchmarks.md, 2026-12-03). The change feed's trigger functions already
-- had `jit = off` (migration 10); these now have it too. Nothing else changes: the bodies stay
-- the ones named in migrations/README.md. A function added later that turns a plan type off must
-- turn JIT off as well (the store's tests check every function in the schema).
ALTER FUNCTION clerk.apply_batch(jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb)
    SET jit = off;
ALTER FUNCTION clerk.apply_organizations(jsonb) SET jit = off;
ALTER FUNCTION clerk.apply_users(jsonb) SET jit = off;
ALTER FUNCTION clerk.apply_memberships(jsonb, text[], text[]) SET jit = off;
ALTER FUNCTION clerk.apply_sessions(jsonb, text[]) SET jit = off;
ALTER FUNCTION clerk.apply_invitations(jsonb, text[], jsonb) SET jit = off;
ALTER FUNCTION clerk.apply_roles(jsonb) SET jit = off;
ALTER FUNCTION clerk.apply_permissions(jsonb) SET jit = off;
ALTER FUNCTION clerk.apply_domains(jsonb) SET jit = off;
ALTER FUNCTION clerk.apply_waitlist_entries(jsonb, jsonb) SET jit = off;
ALTER FUNCTION clerk.apply_subscriptions(jsonb, text[]) SET jit = off;
ALTER FUNCTION clerk.apply_subscription_items(jsonb, text[]) SET jit = off;
ALTER FUNCTION clerk.apply_payment_attempts(jsonb, text[]) SET jit = off;
ALTER FUNCTION clerk.deleted_users_among(text[]) SET jit = off;
ALTER FUNCTION clerk.sequence_changes(integer) SET jit = off;
-- The superseded positional function (migration 5), kept for workers of an older release.
ALTER FUNCTION clerk.apply_changes(text[], text[], text[], text[], text[], integer[], integer[], text[], text[],
    timestamptz[], timestamptz[], text[], boolean[], timestamptz[], text[], text[], timestamptz[], text[], text[],
    text[], text[], text[], text[], text[], text[], text[], text[], text[], boolean[], boolean[], timestamptz[],
    timestamptz[], timestamptz[], text[], timestamptz[], text[], text[], text[], timestamptz[], text[], text[],
    text[], text[], text[], text[], text[], timestamptz[], timestamptz[], text[], timestamptz[], text[], text[],
    timestamptz[], text[], "char"[], text[])
    SET jit = off;
