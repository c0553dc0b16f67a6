-- The history's share of a user's deletion by address: the stored events of the invitations and
-- waitlist entries that reach the user only through an email address.
--
-- Migration 24's scrub finds a deleted user's stored events by `user_id`. An unaccepted
-- invitation and a waitlist entry name no user, only an address, so their bodies kept the
-- address after the tables had removed it (`clerk.apply_invitations` and
-- `clerk.apply_waitlist_entries` match the deleted users' addresses, migration 15). An invitation
-- the deleted user sent names them only as its inviter, with their name and address in
-- `public_inviter_data`. The worker asks this function, before the batch's tombstones remove the
-- addresses, which objects those are, and then scrubs their stored events as well.

-- The deleted users' addresses (lower case: the stored primary address, every address in the
-- stored `raw`, and `more_addresses`, the batch's own versions of those users), the invitations and
-- waitlist entries sent to one of them (`addressed`), and the invitations they sent (`sent`).
CREATE FUNCTION clerk.history_objects_of_deleted_users(
    users text[],
    more_addresses text[],
    OUT addresses text[],
    OUT addressed text[],
    OUT sent text[]
)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $fn$
BEGIN
    SELECT coalesce(array_agg(DISTINCT lower(a.address)), '{}') INTO addresses
    FROM (SELECT u.primary_email_address FROM clerk.users AS u WHERE u.id = ANY (users)
          UNION ALL
          SELECT e ->> 'email_address'
          FROM clerk.users AS u,
               jsonb_array_elements(CASE WHEN jsonb_typeof(u.raw -> 'email_addresses') = 'array'
                                         THEN u.raw -> 'email_addresses' ELSE '[]' END) AS e
          WHERE u.id = ANY (users)
          UNION ALL
          SELECT unnest(more_addresses)) AS a (address)
    WHERE a.address IS NOT NULL;
    addressed := ARRAY(
        SELECT i.id FROM clerk.organization_invitations AS i WHERE lower(i.email_address) = ANY (addresses)
        UNION SELECT w.id FROM clerk.waitlist_entries AS w WHERE lower(w.email_address) = ANY (addresses)
        ORDER BY 1);
    sent := ARRAY(SELECT i.id FROM clerk.organization_invitations AS i WHERE i.inviter_id = ANY (users) ORDER BY 1);
END
$fn$;

-- The stored events of `objects`, locked for the rewrite. Scrubbed ones too: an invitation the
-- deleted user sent keeps its invitee's address (as its row does), and that invitee's own deletion
-- must remove it later. A scrub only removes fields, so scrubbing a body again is harmless, and an
-- object has few events. The predicate repeats the partial index's (migration 24): those are
-- exactly the events whose object is neither their user nor their organization, which
-- invitations and waitlist entries are.
CREATE FUNCTION clerk.history_scrub_object_candidates(objects text[])
RETURNS TABLE (received_at timestamptz, row_id text, svix_id text, body bytea)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $fn$
BEGIN
    RETURN QUERY
    SELECT h.received_at, h.ctid::text, h.svix_id, h.body FROM clerk.event_history AS h
    WHERE h.object_id = ANY (objects) AND h.object_id IS NOT NULL
      AND h.object_id IS DISTINCT FROM h.user_id AND h.object_id IS DISTINCT FROM h.organization_id
    ORDER BY h.received_at, h.svix_id
    FOR UPDATE;
END
$fn$;
