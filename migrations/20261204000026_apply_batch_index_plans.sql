-- The driver's own statements pinned to index plans, as every function it calls already is.
--
-- `clerk.apply_batch` (migration 15) reads the addresses of the users a batch deletes from
-- `clerk.users` before their tombstones remove them. With no statistics on `clerk.users` (before
-- autovacuum has analyzed it, or with it off) the planner hash-joined two sequential scans of the
-- whole table into every batch that deleted a user: about 4,700 buffers and 14 ms per such batch
-- with 10,000 users, a tenth of the database's time on the bench's stream, with or without the
-- history (docs/benchmarks.md, "the driver's address lookup", 2026-12-04). Its other statements
-- read only its arguments. The per-resource functions set these options themselves, and the
-- change feed's trigger functions set the join method they need, so nothing the driver calls
-- changes plan.
ALTER FUNCTION clerk.apply_batch(jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb)
    SET enable_seqscan = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off;
