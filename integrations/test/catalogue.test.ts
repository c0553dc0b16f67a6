// The rest of Clerk's catalogue (issue 19) through the real gateway and worker, read with the Drizzle
// schema: the fixtures in test/fixtures/catalogue/ (sessions, invitations, roles, permissions,
// domains, the waitlist, Billing) are posted signed, then queried as an application would.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { and, asc, eq, isNull, sql } from "drizzle-orm";
import { type NodePgDatabase, drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";

import * as clerkSchema from "../drizzle/clerk-schema.js";
import {
  organizationDomains,
  organizationInvitations,
  organizations,
  paymentAttempts,
  permissions,
  roles,
  sessions,
  subscriptionItems,
  subscriptions,
  users,
  waitlistEntries,
} from "../drizzle/clerk-schema.js";
import { cat, catalogueDeliveries, catalogueTypes, ensureCatalogue } from "./support/catalogue.js";
import { acme, alice, at, bob, carol, carolDeletedAt, env, globex } from "./support/scenario.js";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(_proof?: T): void {}

let pool: pg.Pool;
let db: NodePgDatabase<typeof clerkSchema>;

describe("the rest of the catalogue (sessions, invitations, roles, domains, waitlist, Billing) with Drizzle", () => {
  before(async () => {
    await ensureCatalogue();
    pool = new pg.Pool({ connectionString: env.databaseUrl, max: 2 });
    db = drizzle({ client: pool, schema: clerkSchema });
  });
  after(async () => {
    await pool?.end();
  });

  test("every fixture went through the gateway and was stored, and each new resource fed the change feed", async () => {
    assert.deepEqual(catalogueTypes, [
      "organizationDomain.created",
      "organizationInvitation.accepted",
      "organizationInvitation.created",
      "paymentAttempt.created",
      "paymentAttempt.updated",
      "permission.created",
      "role.created",
      "session.created",
      "session.ended",
      "subscription.active",
      "subscription.created",
      "subscriptionItem.active",
      "subscriptionItem.created",
      "waitlistEntry.created",
    ]);
    // Stored, not ignored. `stale` is a stored outcome too: an older version superseded in its batch
    // (the worker may batch `subscriptionItem.created` with the `.active` after it), or the session
    // of a user deleted before it arrived.
    const { rows } = await pool.query<{ outcome: string; n: number }>(
      "SELECT outcome, count(*)::int AS n FROM clerk.webhook_events WHERE svix_id = ANY($1) GROUP BY 1 ORDER BY 1",
      [catalogueDeliveries.map((d) => d.svixId)],
    );
    assert.equal(rows.reduce((n, r) => n + r.n, 0), catalogueDeliveries.length, "each fixture processed once");
    assert.deepEqual(rows.map((r) => r.outcome).filter((o) => o !== "applied" && o !== "stale"), [], JSON.stringify(rows));
    const changes = await pool.query<{ resource: string }>(
      "SELECT DISTINCT resource FROM clerk.changes WHERE object_id = ANY($1) ORDER BY 1",
      [Object.values(cat)],
    );
    assert.deepEqual(
      changes.rows.map((r) => r.resource),
      ["domain", "invitation", "payment_attempt", "permission", "role", "session", "subscription", "subscription_item", "waitlist_entry"],
    );
  });

  test("a user's sessions: the final status stays, and a deleted user's session is ended and scrubbed", async () => {
    const me = await db.query.users.findFirst({
      columns: { id: true },
      where: eq(users.id, alice.id),
      with: { sessions: { columns: { id: true, status: true, lastActiveOrganizationId: true }, orderBy: asc(sessions.id) } },
    });
    assert.deepEqual(me?.sessions, [
      { id: cat.aliceLaptop, status: "active", lastActiveOrganizationId: acme.id },
      { id: cat.alicePhone, status: "ended", lastActiveOrganizationId: null },
    ]);

    // "Active devices": live sessions of live users, with the device each was last used from.
    const active = await db
      .select({ id: sessions.id, userId: users.id, activity: sessions.latestActivity, lastActiveAt: sessions.lastActiveAt })
      .from(sessions)
      .innerJoin(users, eq(users.id, sessions.userId))
      .where(and(eq(sessions.status, "active"), isNull(sessions.deletedAt), isNull(users.deletedAt)))
      .orderBy(asc(sessions.id));
    assertType<Equal<(typeof active)[number]["activity"], Record<string, unknown> | null>>();
    assert.deepEqual(
      active.map((s) => [s.id, s.userId, s.activity?.["device_type"], s.lastActiveAt?.toISOString()]),
      [
        [cat.aliceLaptop, alice.id, "Macintosh", at(31).toISOString()],
        [cat.bobDesktop, bob.id, "Windows", at(34).toISOString()],
      ],
    );

    const [tablet] = await db.select().from(sessions).where(eq(sessions.id, cat.carolTablet));
    assert.deepEqual(
      [tablet?.userId, tablet?.status, tablet?.deletedAt, tablet?.latestActivity, tablet?.raw],
      [carol.id, "ended", carolDeletedAt, null, null],
    );
  });

  test("an organization's invitations and verified domains through the relational API", async () => {
    const orgs = await db.query.organizations.findMany({
      columns: { id: true },
      where: isNull(organizations.deletedAt),
      orderBy: asc(organizations.id),
      with: {
        invitations: { columns: { id: true, emailAddress: true, status: true, userId: true, inviterId: true } },
        domains: { columns: { name: true, verificationStatus: true, verificationStrategy: true, enrollmentMode: true } },
      },
    });
    assert.deepEqual(orgs, [
      {
        id: acme.id,
        invitations: [
          { id: cat.acmeInvitation, emailAddress: "dave@acme.test", status: "accepted", userId: "user_dave", inviterId: alice.id },
        ],
        domains: [
          { name: "acme.test", verificationStatus: "verified", verificationStrategy: "email_code", enrollmentMode: "automatic_invitation" },
        ],
      },
      {
        id: globex.id,
        invitations: [
          { id: cat.globexInvitation, emailAddress: "erin@globex.test", status: "pending", userId: null, inviterId: bob.id },
        ],
        domains: [
          { name: "globex.test", verificationStatus: "verified", verificationStrategy: "email_code", enrollmentMode: "automatic_invitation" },
        ],
      },
    ]);
    const [frank] = await db.select().from(organizationInvitations).where(eq(organizationInvitations.id, cat.initechInvitation));
    assert.deepEqual([frank?.organizationId, frank?.privateMetadata], ["org_initech", { source: "crm" }]);
    const [domain] = await db.select().from(organizationDomains).where(eq(organizationDomains.id, cat.acmeDomain));
    assert.deepEqual([domain?.totalPendingInvitations, domain?.affiliationEmailAddress], [1, alice.email]);
  });

  test("roles carry their permission keys, which join the permissions table; the waitlist", async () => {
    const rows = await db
      .select({ role: roles.name, permission: permissions.name, type: permissions.type })
      .from(roles)
      .innerJoin(permissions, sql`${permissions.key} = any(${roles.permissions})`)
      .where(and(isNull(roles.deletedAt), isNull(permissions.deletedAt)));
    assert.deepEqual(rows, [{ role: "Content manager", permission: "Create posts", type: "custom" }]);
    const [role] = await db.select().from(roles).where(eq(roles.id, cat.role));
    assertType<Equal<typeof role, clerkSchema.ClerkRole | undefined>>();
    assert.deepEqual([role?.key, role?.permissions, role?.isCreatorEligible], ["org:content_manager", ["org:posts:create"], false]);

    const entries = await db.select({ email: waitlistEntries.emailAddress, status: waitlistEntries.status }).from(waitlistEntries);
    assert.deepEqual(entries, [{ email: "dave@waitlist.test", status: "pending" }]);
  });

  test("Billing: the plan a user or an organization is on, the subscription with its items, the payments", async () => {
    // Gate features by plan: the active item of the payer's subscription.
    const plans = await db
      .select({
        userId: subscriptions.userId,
        organizationId: subscriptions.organizationId,
        plan: subscriptionItems.planSlug,
        amount: subscriptionItems.amount,
        trial: subscriptionItems.isFreeTrial,
      })
      .from(subscriptions)
      .innerJoin(subscriptionItems, eq(subscriptionItems.subscriptionId, subscriptions.id))
      .where(and(eq(subscriptions.status, "active"), eq(subscriptionItems.status, "active"), isNull(subscriptions.deletedAt)))
      .orderBy(asc(subscriptions.id));
    assertType<Equal<(typeof plans)[number]["amount"], number | null>>();
    assert.deepEqual(plans, [
      { userId: alice.id, organizationId: null, plan: "pro", amount: 2000, trial: false },
      { userId: bob.id, organizationId: null, plan: "free", amount: 0, trial: false },
      { userId: null, organizationId: globex.id, plan: "team", amount: 9900, trial: true },
    ]);

    const sub = await db.query.subscriptions.findFirst({
      where: eq(subscriptions.id, cat.aliceSubscription),
      with: { items: { columns: { id: true, status: true, planName: true, currency: true } }, user: { columns: { username: true } } },
    });
    assert.deepEqual(
      [sub?.status, sub?.payerId, sub?.activeAt, sub?.user?.username, sub?.items],
      ["active", "cpayer_alice", at(43), "alice.archer", [{ id: cat.aliceItem, status: "active", planName: "Pro", currency: "USD" }]],
    );

    const payments = await db
      .select({
        id: paymentAttempts.id,
        status: paymentAttempts.status,
        amount: paymentAttempts.amount,
        paidAt: paymentAttempts.paidAt,
        failedAt: paymentAttempts.failedAt,
      })
      .from(paymentAttempts)
      .orderBy(asc(paymentAttempts.id));
    assert.deepEqual(payments, [
      { id: cat.alicePayment, status: "paid", amount: 2000, paidAt: at(43), failedAt: null },
      { id: cat.bobPayment, status: "failed", amount: 500, paidAt: null, failedAt: at(46) },
      { id: cat.globexPayment, status: "paid", amount: 9900, paidAt: at(45), failedAt: null },
    ]);
  });
});
