-- clerk-sync schema: everything lives in schema `clerk`, so it never collides with the
-- application's own tables. Applications read these tables; only clerk-sync writes them.
-- Timestamps are Clerk's millisecond timestamps converted exactly to timestamptz.
-- A row with deleted_at set is a tombstone: personal data is gone and the row is never revived.

CREATE SCHEMA IF NOT EXISTS clerk;

CREATE TABLE clerk.users (
    id                    text PRIMARY KEY,
    external_id           text,
    username              text,
    first_name            text,
    last_name             text,
    -- Resolved through primary_email_address_id, not email_addresses[0].
    primary_email_address text,
    primary_phone_number  text,
    image_url             text,
    public_metadata       jsonb,
    private_metadata      jsonb,
    unsafe_metadata       jsonb,
    banned                boolean,
    locked                boolean,
    last_sign_in_at       timestamptz,
    created_at            timestamptz,
    -- Clerk's updated_at: the ordering guard compares it.
    updated_at            timestamptz,
    deleted_at            timestamptz,
    -- The latest `data` object as Clerk sent it.
    raw                   jsonb,
    synced_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_primary_email_address_idx ON clerk.users (primary_email_address);
CREATE INDEX users_username_idx ON clerk.users (username);
CREATE INDEX users_external_id_idx ON clerk.users (external_id);

CREATE TABLE clerk.organizations (
    id                      text PRIMARY KEY,
    name                    text,
    slug                    text,
    image_url               text,
    created_by              text,
    members_count           integer,
    max_allowed_memberships integer,
    public_metadata         jsonb,
    private_metadata        jsonb,
    created_at              timestamptz,
    updated_at              timestamptz,
    deleted_at              timestamptz,
    raw                     jsonb,
    synced_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organizations_slug_idx ON clerk.organizations (slug);

-- No foreign keys to users or organizations: a membership may arrive before either.
CREATE TABLE clerk.organization_memberships (
    id               text PRIMARY KEY,
    organization_id  text,
    -- From public_user_data.user_id: a membership has no top-level user id.
    user_id          text,
    role             text,
    permissions      text[],
    public_metadata  jsonb,
    private_metadata jsonb,
    created_at       timestamptz,
    updated_at       timestamptz,
    deleted_at       timestamptz,
    raw              jsonb,
    synced_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX organization_memberships_user_id_idx ON clerk.organization_memberships (user_id);
CREATE INDEX organization_memberships_organization_id_idx ON clerk.organization_memberships (organization_id);

-- One row per svix-id ever processed: deduplication happens by inserting here first, in the same
-- transaction as the effect. Pruned after worker.event_retention.
CREATE TABLE clerk.webhook_events (
    svix_id      text PRIMARY KEY,
    event_type   text NOT NULL,
    -- The envelope `timestamp`.
    occurred_at  timestamptz,
    -- When the gateway received it.
    received_at  timestamptz NOT NULL,
    processed_at timestamptz,
    outcome      text CHECK (outcome IN ('applied', 'stale', 'ignored'))
);
CREATE INDEX webhook_events_received_at_idx ON clerk.webhook_events (received_at);
