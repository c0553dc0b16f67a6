-- The sequencer round (`clerk.sequence_changes`, migration 10) read the whole of `clerk.changes`
-- on every round: pg_stat_statements on a 20,000-event worker bench showed its UPDATE touching
-- ~3,300 buffers per round (13.6 per row positioned; 412k in 126 rounds), about 7% of the
-- database's statement time, and `clerk.changes` was the table most read by sequential scans.
-- The likely cause: PL/pgSQL keeps a statement's plan from the first rounds, when the table was
-- nearly empty and a scan of the whole table was the cheaper plan; the table then grows (and
-- nothing analyzes it before autovacuum does), and the plan stays. The apply functions pin their
-- plans to the indexes the same way (migration 7): here the partial index of unpositioned rows
-- finds the round's rows and the primary key updates them.
--
-- Only the function's settings change: its body stays the one in migration 10.
ALTER FUNCTION clerk.sequence_changes(integer)
    SET enable_seqscan = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off;
