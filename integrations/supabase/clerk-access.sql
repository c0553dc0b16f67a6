-- clerk-sync on Supabase: let signed-in users read their own Clerk data, and nothing else.
--
-- Assumes Clerk is configured as a Supabase third-party auth provider, so a request signed with a
-- Clerk session token runs as role `authenticated` with `auth.jwt() ->> 'sub'` = the Clerk user id
-- (`user_...`), and that clerk-sync has created schema `clerk` (`clerk-sync-worker migrate`).
-- Run it as `postgres` (the SQL editor, or a `supabase/migrations/<timestamp>_clerk_access.sql`
-- migration) after clerk-sync's migrations, and again after any clerk-sync upgrade: it is idempotent.
--
-- What a signed-in user (role `authenticated`) gets:
--   * their own row of clerk.users;
--   * their own live memberships (clerk.organization_memberships, user_id = sub);
--   * the organizations they have a live membership of;
--   * never `private_metadata` or `raw` (Clerk keeps private metadata backend-only; `raw` holds it
--     too), never another user, never clerk-sync's bookkeeping tables, and no writes at all.
-- `anon` gets nothing. `service_role` (which bypasses RLS) can read every row and column.
--
-- The views public.clerk_users, public.clerk_organizations and public.clerk_organization_memberships
-- are what the Data API (supabase-js) reads: `public` is exposed by default, `clerk` is not (keep it
-- that way). They run with the caller's rights (security_invoker), so the policies below apply to
-- them, and they hide tombstones (deleted Clerk objects).
--
-- The clerk-sync worker is unaffected as long as it connects as the owner of the clerk tables (the
-- role that ran `clerk-sync-worker migrate`, normally `postgres`): owners bypass row-level security
-- (it is enabled, not forced).

-- 1. Nothing in schema clerk for the API roles, except what is granted below. -----------------------

revoke all on all tables in schema clerk from anon, authenticated;
revoke all on all functions in schema clerk from public, anon, authenticated;
revoke all on schema clerk from public, anon;
grant usage on schema clerk to authenticated, service_role;

grant select (
  id, external_id, username, first_name, last_name, primary_email_address, primary_phone_number,
  image_url, public_metadata, unsafe_metadata, banned, locked, two_factor_enabled, last_sign_in_at,
  created_at, updated_at, deleted_at
) on clerk.users to authenticated;

grant select (
  id, name, slug, image_url, created_by, members_count, max_allowed_memberships, public_metadata,
  created_at, updated_at, deleted_at
) on clerk.organizations to authenticated;

grant select (
  id, organization_id, user_id, role, permissions, public_metadata, created_at, updated_at, deleted_at
) on clerk.organization_memberships to authenticated;

-- Backend code using the service role key reads everything (read-only: clerk-sync is the writer).
grant select on clerk.users, clerk.organizations, clerk.organization_memberships to service_role;

-- 2. Row-level security: which rows. -------------------------------------------------------------------
-- `(select auth.jwt() ->> 'sub')` is evaluated once per statement, not once per row.

alter table clerk.users enable row level security;
alter table clerk.organizations enable row level security;
alter table clerk.organization_memberships enable row level security;

drop policy if exists "clerk: read own user" on clerk.users;
create policy "clerk: read own user" on clerk.users
  for select to authenticated
  using (id = (select auth.jwt() ->> 'sub'));

drop policy if exists "clerk: read own memberships" on clerk.organization_memberships;
create policy "clerk: read own memberships" on clerk.organization_memberships
  for select to authenticated
  using (user_id = (select auth.jwt() ->> 'sub'));

-- The subquery reads memberships under the policy above: only the caller's own.
drop policy if exists "clerk: read organizations i belong to" on clerk.organizations;
create policy "clerk: read organizations i belong to" on clerk.organizations
  for select to authenticated
  using (
    id in (
      select m.organization_id
        from clerk.organization_memberships m
       where m.user_id = (select auth.jwt() ->> 'sub')
         and m.deleted_at is null
    )
  );

-- 3. For your own tables' policies: is the caller a live member of this organization? ----------------
-- e.g. `create policy "members read" on public.projects for select to authenticated
--        using (clerk.is_member_of(organization_id));`
--      `... for update to authenticated using (clerk.is_member_of(organization_id, array['org:admin']));`

create or replace function clerk.is_member_of(organization_id text, roles text[] default null)
  returns boolean
  language sql
  stable
  security invoker
  set search_path = ''
as $$
  select exists (
    select 1
      from clerk.organization_memberships m
     where m.organization_id = is_member_of.organization_id
       and m.user_id = (select auth.jwt() ->> 'sub')
       and m.deleted_at is null
       and (is_member_of.roles is null or m.role = any (is_member_of.roles))
  );
$$;
revoke all on function clerk.is_member_of(text, text[]) from public, anon;
grant execute on function clerk.is_member_of(text, text[]) to authenticated, service_role;

-- 4. Views for the Data API: live rows only, no private columns. ---------------------------------------

create or replace view public.clerk_users with (security_invoker = true) as
  select id, external_id, username, first_name, last_name, primary_email_address,
         primary_phone_number, image_url, public_metadata, unsafe_metadata, banned, locked,
         two_factor_enabled, last_sign_in_at, created_at, updated_at
    from clerk.users
   where deleted_at is null;

create or replace view public.clerk_organizations with (security_invoker = true) as
  select id, name, slug, image_url, created_by, members_count, max_allowed_memberships,
         public_metadata, created_at, updated_at
    from clerk.organizations
   where deleted_at is null;

create or replace view public.clerk_organization_memberships with (security_invoker = true) as
  select id, organization_id, user_id, role, permissions, public_metadata, created_at, updated_at
    from clerk.organization_memberships
   where deleted_at is null;

comment on view public.clerk_users is
  'Clerk users synced by clerk-sync (live rows; RLS: the caller''s own row only). Read-only.';
comment on view public.clerk_organizations is
  'Clerk organizations synced by clerk-sync (live rows; RLS: those the caller belongs to). Read-only.';
comment on view public.clerk_organization_memberships is
  'Clerk organization memberships synced by clerk-sync (live rows; RLS: the caller''s own). Read-only.';

-- Supabase grants anon and authenticated ALL on new objects in `public` by default: take it back.
revoke all on public.clerk_users, public.clerk_organizations, public.clerk_organization_memberships
  from public, anon, authenticated;
grant select on public.clerk_users, public.clerk_organizations, public.clerk_organization_memberships
  to authenticated, service_role;
