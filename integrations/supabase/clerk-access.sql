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
--   * their own sessions (clerk.sessions, user_id = sub), their device and IP address included;
--   * the invitations and verified domains of the organizations they have a live membership of,
--     and an invitation they accepted themselves;
--   * the role and permission definitions (instance-wide), once they are a member of some
--     organization;
--   * their own Billing (subscriptions, subscription items and payment attempts whose payer is
--     them), the subscriptions and items of their organizations (to gate features by plan), and
--     their organizations' payment attempts only as an `org:admin`;
--   * never `private_metadata` or `raw` (Clerk keeps private metadata backend-only; `raw` holds it
--     too, and the payer's or inviter's name and address), never a domain's verifying address,
--     never the waitlist (strangers' addresses), never another user's sessions or Billing, never
--     clerk-sync's bookkeeping tables or functions (`clerk.wait_for` included), and no writes at all.
-- `anon` gets nothing. `service_role` (which bypasses RLS) can read every row and column.
--
-- The views public.clerk_users, public.clerk_organizations, public.clerk_organization_memberships and
-- the same for the rest of the catalogue (public.clerk_sessions, ..., section 5) are what the Data API
-- (supabase-js) reads: `public` is exposed by default, `clerk` is not (keep it
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

-- 5. The rest of Clerk's catalogue (issue 19: migrations 11 to 14). ----------------------------------
-- Same rules: columns granted one by one (never `raw`, `private_metadata`, or a personal address the
-- caller does not own), rows by policy, views without tombstones. A row of these tables is a
-- tombstone (`deleted_at` set) when its Clerk object was deleted, or, for sessions, invitations and
-- Billing, when the user it belongs to was deleted (its personal columns are then NULL).

grant select (
  id, user_id, client_id, status, last_active_at, last_active_organization_id, expire_at, abandon_at,
  latest_activity, created_at, updated_at, deleted_at
) on clerk.sessions to authenticated;

grant select (
  id, organization_id, email_address, role, status, inviter_id, user_id, public_metadata, expires_at,
  created_at, updated_at, deleted_at
) on clerk.organization_invitations to authenticated;

grant select (
  id, key, name, description, is_creator_eligible, permissions, created_at, updated_at, deleted_at
) on clerk.roles to authenticated;

grant select (id, key, name, description, type, created_at, updated_at, deleted_at) on clerk.permissions to authenticated;

grant select (
  id, organization_id, name, enrollment_mode, verification_status, verification_strategy,
  total_pending_invitations, total_pending_suggestions, created_at, updated_at, deleted_at
) on clerk.organization_domains to authenticated;

grant select (
  id, status, payer_id, user_id, organization_id, latest_payment_id, payment_source_id, active_at,
  past_due_at, canceled_at, ended_at, created_at, updated_at, deleted_at
) on clerk.subscriptions to authenticated;

grant select (
  id, subscription_id, status, plan_id, plan_slug, plan_name, amount, currency, interval, is_free_trial,
  payer_id, user_id, organization_id, period_start, period_end, canceled_at, ended_at, created_at,
  updated_at, deleted_at
) on clerk.subscription_items to authenticated;

grant select (
  id, payment_id, status, charge_type, payer_id, user_id, organization_id, amount, currency,
  billing_date, paid_at, failed_at, statement_id, created_at, updated_at, deleted_at
) on clerk.payment_attempts to authenticated;

-- clerk.waitlist_entries: nothing for `authenticated` (no grant, no policy).
grant select on clerk.sessions, clerk.organization_invitations, clerk.roles, clerk.permissions,
  clerk.organization_domains, clerk.waitlist_entries, clerk.subscriptions, clerk.subscription_items,
  clerk.payment_attempts to service_role;

alter table clerk.sessions enable row level security;
alter table clerk.organization_invitations enable row level security;
alter table clerk.roles enable row level security;
alter table clerk.permissions enable row level security;
alter table clerk.organization_domains enable row level security;
alter table clerk.waitlist_entries enable row level security;
alter table clerk.subscriptions enable row level security;
alter table clerk.subscription_items enable row level security;
alter table clerk.payment_attempts enable row level security;

-- The subqueries read memberships under their own policy (the caller's only), as in section 2.
drop policy if exists "clerk: read own sessions" on clerk.sessions;
create policy "clerk: read own sessions" on clerk.sessions
  for select to authenticated
  using (user_id = (select auth.jwt() ->> 'sub'));

drop policy if exists "clerk: read invitations of my organizations" on clerk.organization_invitations;
create policy "clerk: read invitations of my organizations" on clerk.organization_invitations
  for select to authenticated
  using (
    organization_id in (
      select m.organization_id
        from clerk.organization_memberships m
       where m.user_id = (select auth.jwt() ->> 'sub')
         and m.deleted_at is null
    )
    or user_id = (select auth.jwt() ->> 'sub')
  );

drop policy if exists "clerk: read domains of my organizations" on clerk.organization_domains;
create policy "clerk: read domains of my organizations" on clerk.organization_domains
  for select to authenticated
  using (
    organization_id in (
      select m.organization_id
        from clerk.organization_memberships m
       where m.user_id = (select auth.jwt() ->> 'sub')
         and m.deleted_at is null
    )
  );

-- Roles and permissions are the instance's definitions, the same for every organization: any member
-- of some organization may read them (to show a role's name or its permissions).
drop policy if exists "clerk: members read roles" on clerk.roles;
create policy "clerk: members read roles" on clerk.roles
  for select to authenticated
  using (
    exists (
      select 1
        from clerk.organization_memberships m
       where m.user_id = (select auth.jwt() ->> 'sub')
         and m.deleted_at is null
    )
  );

drop policy if exists "clerk: members read permissions" on clerk.permissions;
create policy "clerk: members read permissions" on clerk.permissions
  for select to authenticated
  using (
    exists (
      select 1
        from clerk.organization_memberships m
       where m.user_id = (select auth.jwt() ->> 'sub')
         and m.deleted_at is null
    )
  );

drop policy if exists "clerk: read own or my organizations' subscriptions" on clerk.subscriptions;
create policy "clerk: read own or my organizations' subscriptions" on clerk.subscriptions
  for select to authenticated
  using (
    user_id = (select auth.jwt() ->> 'sub')
    or organization_id in (
      select m.organization_id
        from clerk.organization_memberships m
       where m.user_id = (select auth.jwt() ->> 'sub')
         and m.deleted_at is null
    )
  );

drop policy if exists "clerk: read own or my organizations' subscription items" on clerk.subscription_items;
create policy "clerk: read own or my organizations' subscription items" on clerk.subscription_items
  for select to authenticated
  using (
    user_id = (select auth.jwt() ->> 'sub')
    or organization_id in (
      select m.organization_id
        from clerk.organization_memberships m
       where m.user_id = (select auth.jwt() ->> 'sub')
         and m.deleted_at is null
    )
  );

-- What was charged: the paying user, or an admin of the paying organization.
drop policy if exists "clerk: read own payment attempts" on clerk.payment_attempts;
create policy "clerk: read own payment attempts" on clerk.payment_attempts
  for select to authenticated
  using (
    user_id = (select auth.jwt() ->> 'sub')
    or organization_id in (
      select m.organization_id
        from clerk.organization_memberships m
       where m.user_id = (select auth.jwt() ->> 'sub')
         and m.deleted_at is null
         and m.role = 'org:admin'
    )
  );

create or replace view public.clerk_sessions with (security_invoker = true) as
  select id, user_id, client_id, status, last_active_at, last_active_organization_id, expire_at,
         abandon_at, latest_activity, created_at, updated_at
    from clerk.sessions
   where deleted_at is null;

create or replace view public.clerk_organization_invitations with (security_invoker = true) as
  select id, organization_id, email_address, role, status, inviter_id, user_id, public_metadata,
         expires_at, created_at, updated_at
    from clerk.organization_invitations
   where deleted_at is null;

create or replace view public.clerk_roles with (security_invoker = true) as
  select id, key, name, description, is_creator_eligible, permissions, created_at, updated_at
    from clerk.roles
   where deleted_at is null;

create or replace view public.clerk_permissions with (security_invoker = true) as
  select id, key, name, description, type, created_at, updated_at
    from clerk.permissions
   where deleted_at is null;

create or replace view public.clerk_organization_domains with (security_invoker = true) as
  select id, organization_id, name, enrollment_mode, verification_status, verification_strategy,
         total_pending_invitations, total_pending_suggestions, created_at, updated_at
    from clerk.organization_domains
   where deleted_at is null;

create or replace view public.clerk_subscriptions with (security_invoker = true) as
  select id, status, payer_id, user_id, organization_id, latest_payment_id, payment_source_id,
         active_at, past_due_at, canceled_at, ended_at, created_at, updated_at
    from clerk.subscriptions
   where deleted_at is null;

create or replace view public.clerk_subscription_items with (security_invoker = true) as
  select id, subscription_id, status, plan_id, plan_slug, plan_name, amount, currency, interval,
         is_free_trial, payer_id, user_id, organization_id, period_start, period_end, canceled_at,
         ended_at, created_at, updated_at
    from clerk.subscription_items
   where deleted_at is null;

create or replace view public.clerk_payment_attempts with (security_invoker = true) as
  select id, payment_id, status, charge_type, payer_id, user_id, organization_id, amount, currency,
         billing_date, paid_at, failed_at, statement_id, created_at, updated_at
    from clerk.payment_attempts
   where deleted_at is null;

comment on view public.clerk_sessions is
  'Clerk sessions synced by clerk-sync (live rows; RLS: the caller''s own). Read-only.';
comment on view public.clerk_organization_invitations is
  'Clerk organization invitations synced by clerk-sync (live rows; RLS: of the caller''s organizations). Read-only.';
comment on view public.clerk_roles is
  'Clerk roles synced by clerk-sync (live rows; RLS: members of any organization). Read-only.';
comment on view public.clerk_permissions is
  'Clerk permissions synced by clerk-sync (live rows; RLS: members of any organization). Read-only.';
comment on view public.clerk_organization_domains is
  'Clerk organization domains synced by clerk-sync (live rows; RLS: of the caller''s organizations). Read-only.';
comment on view public.clerk_subscriptions is
  'Clerk Billing subscriptions synced by clerk-sync (live rows; RLS: the caller''s and their organizations''). Read-only.';
comment on view public.clerk_subscription_items is
  'Clerk Billing subscription items synced by clerk-sync (live rows; RLS: the caller''s and their organizations''). Read-only.';
comment on view public.clerk_payment_attempts is
  'Clerk Billing payment attempts synced by clerk-sync (live rows; RLS: the caller''s, their organizations'' as admin). Read-only.';

revoke all on public.clerk_sessions, public.clerk_organization_invitations, public.clerk_roles,
  public.clerk_permissions, public.clerk_organization_domains, public.clerk_subscriptions,
  public.clerk_subscription_items, public.clerk_payment_attempts
  from public, anon, authenticated;
grant select on public.clerk_sessions, public.clerk_organization_invitations, public.clerk_roles,
  public.clerk_permissions, public.clerk_organization_domains, public.clerk_subscriptions,
  public.clerk_subscription_items, public.clerk_payment_attempts
  to authenticated, service_role;
