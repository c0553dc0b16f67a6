// integrations/supabase/*.sql in plain Postgres, on the database the real worker filled: the roles
// and `auth.jwt()` as Supabase has them, and each request run the way PostgREST runs it (a
// transaction with `SET LOCAL ROLE` and the token's claims in `request.jwt.claims`).

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import pg from "pg";

import { cat, ensureCatalogue } from "./support/catalogue.js";
import { acme, alice, bob, carol, env, globex, ids, initech, waitUntil } from "./support/scenario.js";
import { delivery, envelope, post, userObject } from "./support/webhooks.js";

const supabaseDir = fileURLToPath(new URL("../../supabase/", import.meta.url));
const stub = readFileSync(fileURLToPath(new URL("../../test/fixtures/supabase-stub.sql", import.meta.url)), "utf8");
const sqlFiles = readdirSync(supabaseDir)
  .filter((f) => f.endsWith(".sql"))
  .sort();

type Role = "anon" | "authenticated" | "service_role";
interface Caller {
  label: string;
  role: Role;
  claims: Record<string, unknown> | null;
}
const token = (sub: string | undefined): Record<string, unknown> => ({
  ...(sub === undefined ? {} : { sub }),
  role: "authenticated",
  iss: "https://clerk.integrations.test",
  azp: "http://localhost:3000",
  exp: Math.floor(Date.now() / 1000) + 60,
});
const asUser = (sub: string, label = sub): Caller => ({ label, role: "authenticated", claims: token(sub) });
const ALICE = asUser(alice.id);
const BOB = asUser(bob.id);
const CAROL = asUser(carol.id, `${carol.id} (deleted in Clerk, stale token)`);
const STRANGER = asUser("user_stranger", "user_stranger (no rows)");
const DAVE = asUser("user_dave", "user_dave (accepted an Acme invitation)");
const NO_SUB: Caller = { label: "authenticated without sub", role: "authenticated", claims: token(undefined) };
const ANON: Caller = { label: "anon", role: "anon", claims: { role: "anon" } };
const SERVICE: Caller = { label: "service_role", role: "service_role", claims: { role: "service_role" } };

let admin: pg.Client;

type Outcome = { rows: Record<string, unknown>[] } | { error: string; message: string };

/** Runs `query` as PostgREST would for `caller`, in a transaction that is rolled back. */
async function run(caller: Caller, query: string, params: unknown[] = []): Promise<Outcome> {
  await admin.query("BEGIN");
  try {
    await admin.query(`SET LOCAL ROLE ${caller.role}`);
    if (caller.claims) {
      await admin.query("SELECT set_config('request.jwt.claims', $1, true)", [JSON.stringify(caller.claims)]);
    }
    const { rows } = await admin.query(query, params);
    return { rows };
  } catch (e) {
    const err = e as { code?: string; message: string };
    return { error: err.code ?? "?", message: err.message };
  } finally {
    await admin.query("ROLLBACK");
  }
}

const printed: string[] = [];
/** SEES: rows came back; HIDDEN: allowed, but row-level security filtered every row; DENIED: refused. */
function report(kind: "SEES" | "HIDDEN" | "DENIED", caller: Caller, query: string, result: string): void {
  printed.push(`${kind.padEnd(6)}  ${caller.label.padEnd(42)}  ${query}\n${" ".repeat(52)}-> ${result}`);
}

/** Expects the query to succeed with exactly `expected` (the first column of each row). */
async function sees(caller: Caller, query: string, expected: unknown[]): Promise<void> {
  const outcome = await run(caller, query);
  if ("error" in outcome) assert.fail(`${caller.label}: ${query}: ${outcome.error} ${outcome.message}`);
  const got = outcome.rows.map((r) => Object.values(r)[0]);
  assert.deepEqual(got, expected, `${caller.label}: ${query}`);
  if (got.length === 0) report("HIDDEN", caller, query, "no rows");
  else report("SEES", caller, query, got.map(String).join(", "));
}

/** Expects a permission error (SQLSTATE 42501). */
async function denied(caller: Caller, query: string): Promise<void> {
  const outcome = await run(caller, query);
  assert.ok("error" in outcome, `${caller.label}: ${query} should be refused, got ${JSON.stringify(outcome)}`);
  assert.equal(outcome.error, "42501", `${caller.label}: ${query}: ${outcome.message}`);
  report("DENIED", caller, query, outcome.message);
}

describe("Supabase row-level security (integrations/supabase/*.sql) on the database the worker filled", () => {
  before(async () => {
    // The scenario and the rest of the catalogue (sessions, invitations, domains, roles, Billing).
    await ensureCatalogue();
    admin = new pg.Client({ connectionString: env.databaseUrl });
    await admin.connect();
    const { rows } = await admin.query<{ rolname: string }>(
      "SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role') ORDER BY 1",
    );
    assert.deepEqual(
      rows.map((r) => r.rolname),
      ["anon", "authenticated", "service_role"],
      "the Supabase roles exist (scripts/test-integrations.sh creates them)",
    );
    await admin.query(stub);
    assert.ok(sqlFiles.length > 0, "integrations/supabase has SQL files");
    // Twice: the files must be re-runnable (after a clerk-sync upgrade, for instance).
    for (let round = 0; round < 2; round++) {
      for (const file of sqlFiles) await admin.query(readFileSync(`${supabaseDir}/${file}`, "utf8"));
    }
    console.log(`applied ${sqlFiles.join(", ")} (twice) on top of test/fixtures/supabase-stub.sql`);
  });
  after(async () => {
    await admin?.end();
    console.log(`${printed.length} access cases (SEES: rows returned; HIDDEN: no row passes the policies; DENIED: refused):`);
    console.log(printed.join("\n"));
  });

  test("the worker keeps writing once row-level security is on (it owns the tables)", async () => {
    const bobLater = { ...bob, publicMetadata: { theme: "dark" }, updatedAt: bob.updatedAt + 3_600_000 };
    const d = delivery(envelope("user.updated", Date.now(), userObject(bobLater)), "msg_supabase_bob_theme");
    const res = await post(env.webhookUrl, env.secret, d);
    assert.equal(res.status, 202);
    await waitUntil("bob's update to be applied", async () => {
      const { rows } = await admin.query("SELECT public_metadata FROM clerk.users WHERE id = $1", [bob.id]);
      return rows[0]?.public_metadata?.theme === "dark" ? true : undefined;
    });
  });

  test("a signed-in user reads their own user row, and no other user", async () => {
    await sees(ALICE, "SELECT id FROM public.clerk_users ORDER BY id", [alice.id]);
    await sees(ALICE, "SELECT id FROM clerk.users ORDER BY id", [alice.id]);
    await sees(ALICE, `SELECT id FROM public.clerk_users WHERE id IN ('${bob.id}', '${carol.id}')`, []);
    await sees(ALICE, "SELECT primary_email_address FROM public.clerk_users", [alice.email]);
    await sees(BOB, "SELECT id FROM public.clerk_users ORDER BY id", [bob.id]);
  });

  test("a signed-in user reads the organizations they belong to, and no other", async () => {
    await sees(ALICE, "SELECT id FROM public.clerk_organizations ORDER BY id", [acme.id, globex.id]);
    await sees(BOB, "SELECT id FROM public.clerk_organizations ORDER BY id", [globex.id]);
    await sees(BOB, `SELECT id FROM public.clerk_organizations WHERE id = '${acme.id}'`, []);
    // Bob's membership of the deleted organization is tombstoned too: its row is gone for him.
    await sees(BOB, "SELECT id FROM clerk.organizations ORDER BY id", [globex.id]);
  });

  test("a signed-in user reads their own live memberships only", async () => {
    await sees(ALICE, "SELECT id FROM public.clerk_organization_memberships ORDER BY id", [ids.aliceAcme, ids.aliceGlobex]);
    await sees(ALICE, `SELECT id FROM clerk.organization_memberships WHERE organization_id = '${acme.id}'`, [ids.aliceAcme]);
    await sees(
      ALICE,
      "SELECT o.name FROM public.clerk_organization_memberships m " +
        "JOIN public.clerk_organizations o ON o.id = m.organization_id ORDER BY 1",
      ["Acme Corp", "Globex"],
    );
  });

  test("private columns, bookkeeping tables and writes are refused", async () => {
    await denied(ALICE, "SELECT private_metadata FROM clerk.users");
    await denied(ALICE, "SELECT * FROM clerk.users");
    await denied(ALICE, "SELECT raw FROM clerk.organizations");
    await denied(ALICE, "SELECT private_metadata FROM clerk.organization_memberships");
    await denied(ALICE, "SELECT * FROM clerk.webhook_events");
    await denied(ALICE, "UPDATE public.clerk_users SET first_name = 'Mallory'");
    await denied(ALICE, `UPDATE clerk.users SET banned = false WHERE id = '${alice.id}'`);
    await denied(
      ALICE,
      `INSERT INTO clerk.organization_memberships (id, organization_id, user_id) VALUES ('x', '${initech.id}', '${alice.id}')`,
    );
    await denied(ALICE, `DELETE FROM public.clerk_organizations WHERE id = '${acme.id}'`);
  });

  test("views hide tombstones", async () => {
    // The policy lets Carol's stale token match her own row, which is a tombstone: the view hides it.
    await sees(CAROL, "SELECT id FROM clerk.users WHERE deleted_at IS NOT NULL AND first_name IS NULL", [carol.id]);
    await sees(CAROL, "SELECT id FROM public.clerk_users", []);
    await sees(CAROL, "SELECT id FROM public.clerk_organization_memberships", []);
    await sees(CAROL, "SELECT id FROM public.clerk_organizations", []);
    await sees(SERVICE, "SELECT id FROM clerk.users ORDER BY id", [alice.id, bob.id, carol.id]);
    await sees(SERVICE, "SELECT id FROM public.clerk_users ORDER BY id", [alice.id, bob.id]);
    await sees(SERVICE, "SELECT id FROM public.clerk_organizations ORDER BY id", [acme.id, globex.id]);
    await sees(SERVICE, "SELECT count(*)::int FROM clerk.organization_memberships WHERE deleted_at IS NOT NULL", [2]);
  });

  test("callers without a matching sub, and anon, see nothing", async () => {
    await sees(STRANGER, "SELECT id FROM public.clerk_users", []);
    await sees(STRANGER, "SELECT id FROM public.clerk_organizations", []);
    await sees(NO_SUB, "SELECT id FROM clerk.users", []);
    await sees(NO_SUB, "SELECT id FROM public.clerk_organizations", []);
    await denied(ANON, "SELECT id FROM public.clerk_users");
    await denied(ANON, "SELECT id FROM public.clerk_organizations");
    await denied(ANON, "SELECT id FROM clerk.users");
    await denied(ANON, `SELECT clerk.is_member_of('${acme.id}')`);
  });

  test("a signed-in user reads their own sessions, and nobody else's", async () => {
    await sees(ALICE, "SELECT id FROM clerk.sessions ORDER BY id", [cat.aliceLaptop, cat.alicePhone]);
    await sees(ALICE, "SELECT latest_activity ->> 'ip_address' FROM public.clerk_sessions WHERE status = 'active'", [
      "203.0.113.10",
    ]);
    await sees(BOB, "SELECT id FROM public.clerk_sessions ORDER BY id", [cat.bobDesktop]);
    await sees(BOB, `SELECT id FROM clerk.sessions WHERE user_id = '${alice.id}'`, []);
    // Carol's stale token matches her session, a tombstone since she was deleted: the view hides it.
    await sees(CAROL, "SELECT id FROM clerk.sessions WHERE deleted_at IS NOT NULL AND latest_activity IS NULL", [cat.carolTablet]);
    await sees(CAROL, "SELECT id FROM public.clerk_sessions", []);
    await sees(STRANGER, "SELECT id FROM public.clerk_sessions", []);
    await sees(NO_SUB, "SELECT id FROM clerk.sessions", []);
    await denied(ALICE, "SELECT raw FROM clerk.sessions");
    await denied(ALICE, `UPDATE clerk.sessions SET status = 'active' WHERE id = '${cat.alicePhone}'`);
    await denied(ANON, "SELECT id FROM public.clerk_sessions");
  });

  test("members read their organizations' invitations and domains, and no other organization's", async () => {
    await sees(ALICE, "SELECT id FROM public.clerk_organization_invitations ORDER BY id", [cat.acmeInvitation, cat.globexInvitation]);
    await sees(BOB, "SELECT id FROM public.clerk_organization_invitations ORDER BY id", [cat.globexInvitation]);
    // Bob's membership of Initech was tombstoned with it: Initech's invitation is gone for him too.
    await sees(BOB, `SELECT id FROM clerk.organization_invitations WHERE organization_id IN ('${acme.id}', '${initech.id}')`, []);
    await sees(DAVE, "SELECT status FROM public.clerk_organization_invitations", ["accepted"]);
    await sees(STRANGER, "SELECT id FROM public.clerk_organization_invitations", []);
    await sees(ALICE, "SELECT name FROM public.clerk_organization_domains ORDER BY name", ["acme.test", "globex.test"]);
    await sees(BOB, "SELECT name FROM public.clerk_organization_domains ORDER BY name", ["globex.test"]);
    await sees(BOB, `SELECT name FROM clerk.organization_domains WHERE organization_id = '${acme.id}'`, []);
    await sees(DAVE, "SELECT name FROM public.clerk_organization_domains", []);
    await denied(ALICE, "SELECT private_metadata FROM clerk.organization_invitations");
    await denied(ALICE, "SELECT affiliation_email_address FROM clerk.organization_domains");
    await denied(ALICE, `DELETE FROM public.clerk_organization_invitations WHERE id = '${cat.acmeInvitation}'`);
  });

  test("members read the role and permission definitions; the waitlist is for the service role only", async () => {
    await sees(ALICE, "SELECT key FROM public.clerk_roles", ["org:content_manager"]);
    await sees(BOB, "SELECT permissions FROM public.clerk_roles", [["org:posts:create"]]);
    await sees(BOB, "SELECT key FROM public.clerk_permissions", ["org:posts:create"]);
    // Carol has no live membership any more; the stranger never had one.
    await sees(CAROL, "SELECT key FROM public.clerk_roles", []);
    await sees(STRANGER, "SELECT key FROM public.clerk_permissions", []);
    await denied(ALICE, "SELECT raw FROM clerk.roles");
    await denied(ALICE, "SELECT id FROM clerk.waitlist_entries");
    await denied(ANON, "SELECT id FROM clerk.waitlist_entries");
    await sees(SERVICE, "SELECT email_address FROM clerk.waitlist_entries", ["dave@waitlist.test"]);
  });

  test("a user reads their own subscription, its items and their payments; members their organization's plan", async () => {
    await sees(ALICE, "SELECT id FROM public.clerk_subscriptions ORDER BY id", [cat.aliceSubscription, cat.globexSubscription]);
    await sees(BOB, "SELECT id FROM public.clerk_subscriptions ORDER BY id", [cat.bobSubscription, cat.globexSubscription]);
    await sees(ALICE, `SELECT id FROM clerk.subscriptions WHERE user_id = '${bob.id}'`, []);
    await sees(ALICE, "SELECT plan_slug FROM public.clerk_subscription_items ORDER BY plan_slug", ["pro", "team"]);
    await sees(BOB, "SELECT plan_slug FROM public.clerk_subscription_items ORDER BY plan_slug", ["free", "team"]);
    await sees(
      ALICE,
      "SELECT i.plan_slug FROM public.clerk_subscriptions s JOIN public.clerk_subscription_items i ON i.subscription_id = s.id " +
        "WHERE s.user_id = auth.jwt() ->> 'sub' AND i.status = 'active'",
      ["pro"],
    );
    // Payment attempts: the paying user's own; an organization's for its admins (Bob), not for
    // its other members (Alice is an org:member of Globex).
    await sees(ALICE, "SELECT id FROM public.clerk_payment_attempts ORDER BY id", [cat.alicePayment]);
    await sees(BOB, "SELECT id FROM public.clerk_payment_attempts ORDER BY id", [cat.bobPayment, cat.globexPayment]);
    await sees(STRANGER, "SELECT id FROM public.clerk_subscriptions", []);
    await sees(STRANGER, "SELECT id FROM public.clerk_payment_attempts", []);
    await sees(CAROL, "SELECT id FROM public.clerk_subscription_items", []);
    await denied(ALICE, "SELECT raw FROM clerk.subscriptions");
    await denied(ALICE, "SELECT raw FROM clerk.subscription_items");
    await denied(ALICE, "SELECT raw FROM clerk.payment_attempts");
    await denied(ALICE, `UPDATE public.clerk_subscriptions SET status = 'active' WHERE id = '${cat.bobSubscription}'`);
    await denied(ANON, "SELECT id FROM public.clerk_subscriptions");
    // "Wait for sync" is server-side: it would tell anyone whether another user's row exists.
    await denied(ALICE, `SELECT clerk.wait_for('session', '${cat.bobDesktop}', now(), '0 seconds')`);
  });

  test("clerk.is_member_of() in an application table's policy", async () => {
    await sees(ALICE, `SELECT clerk.is_member_of('${acme.id}')`, [true]);
    await sees(ALICE, `SELECT clerk.is_member_of('${acme.id}', array['org:admin'])`, [true]);
    await sees(ALICE, `SELECT clerk.is_member_of('${globex.id}', array['org:admin'])`, [false]);
    await sees(BOB, `SELECT clerk.is_member_of('${acme.id}')`, [false]);
    await sees(BOB, `SELECT clerk.is_member_of('${initech.id}')`, [false]);

    await admin.query(`
      CREATE TABLE public.team_notes (
        id serial PRIMARY KEY,
        organization_id text NOT NULL,
        body text NOT NULL
      );
      ALTER TABLE public.team_notes ENABLE ROW LEVEL SECURITY;
      CREATE POLICY "members read" ON public.team_notes
        FOR SELECT TO authenticated USING (clerk.is_member_of(organization_id));
      CREATE POLICY "admins write" ON public.team_notes
        FOR INSERT TO authenticated WITH CHECK (clerk.is_member_of(organization_id, array['org:admin']));
      INSERT INTO public.team_notes (organization_id, body)
        VALUES ('${acme.id}', 'acme note'), ('${globex.id}', 'globex note'), ('${initech.id}', 'initech note');`);
    try {
      await sees(ALICE, "SELECT body FROM public.team_notes ORDER BY id", ["acme note", "globex note"]);
      await sees(BOB, "SELECT body FROM public.team_notes ORDER BY id", ["globex note"]);
      await sees(ALICE, `INSERT INTO public.team_notes (organization_id, body) VALUES ('${acme.id}', 'ok') RETURNING body`, ["ok"]);
      // Alice is only a member of Globex: the WITH CHECK refuses (SQLSTATE 42501 as well).
      await denied(ALICE, `INSERT INTO public.team_notes (organization_id, body) VALUES ('${globex.id}', 'no')`);
    } finally {
      await admin.query("DROP TABLE public.team_notes");
    }
  });
});
