// The Drizzle schema against the database the real worker filled: typed rows, the users ->
// memberships -> organizations join (live rows only), the relational query API, and an app table.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { and, asc, count, eq, isNotNull, isNull, sql } from "drizzle-orm";
import { type NodePgDatabase, drizzle } from "drizzle-orm/node-postgres";
import { getTableConfig } from "drizzle-orm/pg-core";
import pg from "pg";

import { projects, projectsRelations, projectsWithOwner } from "../drizzle/app-example.js";
import * as clerkSchema from "../drizzle/clerk-schema.js";
import { type ClerkUser, organizationMemberships, organizations, users } from "../drizzle/clerk-schema.js";
import { CLERK_TABLES, clerkColumns, columnMap } from "./support/columns.js";
import {
  acme,
  alice,
  bob,
  carol,
  carolDeletedAt,
  ensureScenario,
  env,
  globex,
  ids,
  initech,
  initechDeletedAt,
} from "./support/scenario.js";

// Compile-time assertions: `tsc` fails the build if an inferred type drifts.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(_proof?: T): void {}

const schema = { ...clerkSchema, projects, projectsRelations };
let pool: pg.Pool;
let db: NodePgDatabase<typeof schema>;

/** The join an app runs most: each live user's live memberships with their live organization. */
function liveMembershipsJoin() {
  return db
    .select({
      userId: users.id,
      email: users.primaryEmailAddress,
      firstName: users.firstName,
      organizationId: organizations.id,
      organization: organizations.name,
      slug: organizations.slug,
      role: organizationMemberships.role,
      permissions: organizationMemberships.permissions,
      memberSince: organizationMemberships.createdAt,
    })
    .from(users)
    .innerJoin(organizationMemberships, eq(organizationMemberships.userId, users.id))
    .innerJoin(organizations, eq(organizations.id, organizationMemberships.organizationId))
    .where(and(isNull(users.deletedAt), isNull(organizationMemberships.deletedAt), isNull(organizations.deletedAt)))
    .orderBy(asc(users.id), asc(organizations.name));
}

describe("Drizzle schema (integrations/drizzle/clerk-schema.ts) on the database the worker filled", () => {
  before(async () => {
    await ensureScenario();
    pool = new pg.Pool({ connectionString: env.databaseUrl, max: 2 });
    db = drizzle({ client: pool, schema });
  });
  after(async () => {
    await pool?.end();
  });

  test("every column of the Drizzle tables matches the migrated database (name, type, nullability)", async () => {
    const expected: Record<string, string> = {};
    const { sessions, organizationInvitations, roles, permissions, organizationDomains, waitlistEntries } = clerkSchema;
    const { subscriptions, subscriptionItems, paymentAttempts } = clerkSchema;
    for (const table of [
      users,
      organizations,
      organizationMemberships,
      sessions,
      organizationInvitations,
      roles,
      permissions,
      organizationDomains,
      waitlistEntries,
      subscriptions,
      subscriptionItems,
      paymentAttempts,
    ]) {
      const config = getTableConfig(table);
      assert.equal(config.schema, "clerk");
      for (const column of config.columns) {
        expected[`${config.name}.${column.name}`] = `${column.getSQLType()}${column.notNull ? " not null" : ""}`;
      }
    }
    const actual = columnMap(await clerkColumns(env.databaseUrl));
    assert.deepEqual(expected, actual);
    console.log(`${Object.keys(actual).length} columns of ${CLERK_TABLES.length} tables match the Drizzle schema`);
  });

  test("users -> memberships -> organizations, live rows only: typed rows", async () => {
    const rows = await liveMembershipsJoin();

    assertType<
      Equal<
        (typeof rows)[number],
        {
          userId: string;
          email: string | null;
          firstName: string | null;
          organizationId: string;
          organization: string | null;
          slug: string | null;
          role: string | null;
          permissions: string[] | null;
          memberSince: Date | null;
        }
      >
    >();

    console.log("users -> memberships -> organizations (deleted_at IS NULL on all three):");
    console.table(
      rows.map((r) => ({
        user: r.userId,
        email: r.email,
        organization: `${r.organization} (${r.organizationId})`,
        role: r.role,
        permissions: r.permissions?.length,
        memberSince: r.memberSince?.toISOString(),
      })),
    );

    assert.deepEqual(
      rows.map((r) => [r.userId, r.email, r.organizationId, r.organization, r.role]),
      [
        [alice.id, alice.email, acme.id, "Acme Corp", "org:admin"],
        [alice.id, alice.email, globex.id, "Globex", "org:member"],
        [bob.id, bob.email, globex.id, "Globex", "org:admin"],
      ],
    );
    // Real values, parsed into real types by the driver.
    const first = rows[0]!;
    assert.ok(first.memberSince instanceof Date);
    assert.equal(first.memberSince.toISOString(), "2026-01-05T09:10:00.000Z");
    assert.deepEqual(first.permissions, ["org:sys_profile:manage", "org:sys_memberships:read", "org:sys_memberships:manage"]);
  });

  test("the filters matter: the tombstones are in the tables and only the deleted_at filters drop them", async () => {
    const [all] = await db
      .select({ n: count() })
      .from(users)
      .innerJoin(organizationMemberships, eq(organizationMemberships.userId, users.id))
      .innerJoin(organizations, eq(organizations.id, organizationMemberships.organizationId));
    assert.equal(all!.n, 5, "all five memberships join when nothing is filtered");

    const tombstones = await db
      .select({ id: organizationMemberships.id, deletedAt: organizationMemberships.deletedAt })
      .from(organizationMemberships)
      .where(isNotNull(organizationMemberships.deletedAt))
      .orderBy(organizationMemberships.id);
    // Deleting a user or an organization tombstones its memberships too.
    assert.deepEqual(tombstones, [
      { id: ids.bobInitech, deletedAt: initechDeletedAt },
      { id: ids.carolAcme, deletedAt: carolDeletedAt },
    ]);

    const deletedUser = await db.query.users.findFirst({ where: eq(users.id, carol.id) });
    assert.ok(deletedUser);
    assert.deepEqual(deletedUser.deletedAt, carolDeletedAt);
    for (const personal of ["firstName", "lastName", "username", "primaryEmailAddress", "privateMetadata", "raw"] as const) {
      assert.equal(deletedUser[personal], null, `a tombstone keeps no ${personal}`);
    }
    const deletedOrg = await db.query.organizations.findFirst({ where: eq(organizations.id, initech.id) });
    assert.deepEqual([deletedOrg?.name, deletedOrg?.deletedAt], [null, initechDeletedAt]);
  });

  test("the relational query API: db.query.users with memberships and their organization", async () => {
    const live = await db.query.users.findMany({
      columns: { id: true, username: true, publicMetadata: true, privateMetadata: true },
      where: isNull(users.deletedAt),
      orderBy: asc(users.id),
      with: {
        memberships: {
          columns: { role: true },
          where: isNull(organizationMemberships.deletedAt),
          orderBy: asc(organizationMemberships.organizationId),
          with: { organization: { columns: { id: true, name: true, deletedAt: true, publicMetadata: true } } },
        },
      },
    });

    type LiveUser = (typeof live)[number];
    assertType<Equal<LiveUser["memberships"][number]["organization"], {
      id: string;
      name: string | null;
      deletedAt: Date | null;
      publicMetadata: clerkSchema.ClerkMetadata | null;
    } | null>>();
    assertType<Equal<LiveUser["privateMetadata"], ClerkUser["privateMetadata"]>>();

    assert.deepEqual(
      live.map((u) => [u.id, u.username, u.memberships.map((m) => `${m.organization?.name}:${m.role}`)]),
      [
        [alice.id, "alice.archer", ["Acme Corp:org:admin", "Globex:org:member"]],
        [bob.id, "bob", ["Globex:org:admin"]],
      ],
    );
    // jsonb comes back parsed; updates (user.updated) are applied.
    assert.deepEqual(live[0]!.publicMetadata, { plan: "pro" });
    assert.deepEqual(live[0]!.privateMetadata, { stripeCustomerId: "cus_alice" });
    assert.deepEqual(live[0]!.memberships[0]!.organization?.publicMetadata, { tier: "enterprise" });
    // The nested organization of the latest membership event updated members_count.
    const [globexRow] = await db
      .select({ membersCount: organizations.membersCount })
      .from(organizations)
      .where(eq(organizations.id, globex.id));
    assert.equal(globexRow!.membersCount, 2);
  });

  test("an application table that points at Clerk users and organizations (drizzle/app-example.ts)", async () => {
    await db.execute(sql`
      CREATE TABLE IF NOT EXISTS public.projects (
        id serial PRIMARY KEY,
        name text NOT NULL,
        owner_id text NOT NULL,
        organization_id text,
        created_at timestamptz NOT NULL DEFAULT now()
      )`);
    await db.delete(projects);
    await db.insert(projects).values([
      { name: "Rocket", ownerId: alice.id, organizationId: acme.id },
      { name: "Anvil", ownerId: bob.id, organizationId: initech.id },
      // Written before clerk-sync has the user: fine, no foreign key.
      { name: "Fresh", ownerId: "user_not_synced_yet" },
    ]);

    const withOwner = await projectsWithOwner(db);
    assertType<Equal<(typeof withOwner)[number]["ownerEmail"], string | null>>();
    assert.deepEqual(
      withOwner.map((p) => [p.name, p.ownerEmail]),
      [
        ["Rocket", alice.email],
        ["Anvil", bob.email],
        ["Fresh", null],
      ],
    );

    const withOrg = await db.query.projects.findMany({ orderBy: asc(projects.id), with: { organization: true } });
    assertType<Equal<(typeof withOrg)[number]["organization"], clerkSchema.ClerkOrganization | null>>();
    assert.deepEqual(
      withOrg.map((p) => [p.name, p.organization?.name ?? null, p.organization?.deletedAt ?? null]),
      [
        ["Rocket", "Acme Corp", null],
        // The organization was deleted in Clerk: its tombstone is still there, name gone.
        ["Anvil", null, initechDeletedAt],
        ["Fresh", null, null],
      ],
    );
    await db.execute(sql`DROP TABLE public.projects`);
  });
});
