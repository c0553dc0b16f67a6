-- users.two_factor_enabled: whether the user has a second factor (Clerk's `two_factor_enabled`),
-- for applications that require one for some actions. Not personal data: like `banned` and
-- `locked` it stays current on a tombstone.
--
-- Adding a column takes this file (the column, and the one apply function that writes the table,
-- replaced whole), the field in the Clerk object (`event/objects.rs`) and in the row struct
-- (`db/resources.rs`): see docs/adding-a-resource.md.

ALTER TABLE clerk.users ADD COLUMN two_factor_enabled boolean;

CREATE OR REPLACE FUNCTION clerk.apply_users(batch jsonb) RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $fn$
BEGIN
    IF jsonb_array_length(batch -> 'upserts') > 0 THEN
        RETURN QUERY
        WITH w AS (
            INSERT INTO clerk.users AS u (id, external_id, username, first_name, last_name, primary_email_address,
                primary_phone_number, image_url, public_metadata, private_metadata, unsafe_metadata, banned, locked,
                two_factor_enabled, last_sign_in_at, created_at, updated_at, raw, synced_at, version_at, version_svix_id)
            SELECT x.id, x.external_id, x.username, x.first_name, x.last_name, x.primary_email_address,
                x.primary_phone_number, x.image_url, x.public_metadata, x.private_metadata, x.unsafe_metadata,
                x.banned, x.locked, x.two_factor_enabled, x.last_sign_in_at, x.created_at, x.updated_at, x.raw, now(), x.version_at,
                x.version_svix_id
            FROM jsonb_populate_recordset(NULL::clerk.users, batch -> 'upserts') AS x
            WHERE NOT EXISTS (SELECT 1 FROM clerk.users AS c WHERE c.id = x.id
                AND (coalesce(c.updated_at, '-infinity'), coalesce(c.version_at, '-infinity'),
                     coalesce(c.version_svix_id, '') COLLATE "C")
                 >= (x.updated_at, coalesce(x.version_at, '-infinity'), x.version_svix_id COLLATE "C"))
            ORDER BY x.id
            ON CONFLICT (id) DO UPDATE SET
                -- The external id a deletion named is final (the deletion is the object's last event).
                external_id = coalesce(u.deleted_external_id, EXCLUDED.external_id),
                username = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.username END,
                first_name = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.first_name END,
                last_name = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.last_name END,
                primary_email_address = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.primary_email_address END,
                primary_phone_number = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.primary_phone_number END,
                image_url = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.image_url END,
                public_metadata = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.public_metadata END,
                private_metadata = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.private_metadata END,
                unsafe_metadata = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.unsafe_metadata END,
                last_sign_in_at = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.last_sign_in_at END,
                raw = CASE WHEN u.deleted_at IS NULL THEN EXCLUDED.raw END,
                banned = EXCLUDED.banned,
                locked = EXCLUDED.locked,
                two_factor_enabled = EXCLUDED.two_factor_enabled,
                created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at,
                version_at = EXCLUDED.version_at,
                version_svix_id = EXCLUDED.version_svix_id,
                synced_at = now()
            WHERE (coalesce(u.updated_at, '-infinity'), coalesce(u.version_at, '-infinity'),
                   coalesce(u.version_svix_id, '') COLLATE "C")
                < (EXCLUDED.updated_at, coalesce(EXCLUDED.version_at, '-infinity'), EXCLUDED.version_svix_id COLLATE "C")
            RETURNING u.id, u.deleted_at IS NULL AS alive
        )
        SELECT w.id FROM w WHERE w.alive;
    END IF;

    IF jsonb_array_length(batch -> 'deletions') > 0 THEN
        INSERT INTO clerk.users AS t (id, external_id, deleted_external_id, deleted_at, synced_at)
        SELECT x.id, x.external_id, x.external_id, x.deleted_at, now()
        FROM jsonb_populate_recordset(NULL::clerk.users, batch -> 'deletions') AS x ORDER BY x.id
        ON CONFLICT (id) DO UPDATE SET
            deleted_at = LEAST(COALESCE(t.deleted_at, EXCLUDED.deleted_at), EXCLUDED.deleted_at),
            external_id = COALESCE(EXCLUDED.external_id, t.external_id),
            deleted_external_id = COALESCE(EXCLUDED.deleted_external_id, t.deleted_external_id),
            username = NULL, first_name = NULL, last_name = NULL, primary_email_address = NULL,
            primary_phone_number = NULL, image_url = NULL, public_metadata = NULL, private_metadata = NULL,
            unsafe_metadata = NULL, last_sign_in_at = NULL, raw = NULL, synced_at = now();
    END IF;
END
$fn$;
