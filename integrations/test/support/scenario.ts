// The scenario every integration test reads: Clerk events posted, signed, to the real gateway and
// applied by the real worker. Posting it is idempotent: the svix-ids are fixed, so when several test
// files post it, the worker applies each event once and records the repeats as duplicates.

import pg from "pg";

import {
  type Delivery,
  type JsonObject,
  type MembershipSpec,
  type OrgSpec,
  type UserSpec,
  deletedObject,
  delivery,
  envelope,
  membershipObject,
  organizationObject,
  post,
  userObject,
} from "./webhooks.js";

export function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests through scripts/test-integrations.sh`);
  }
  return value;
}

export const env = {
  get databaseUrl(): string {
    return requiredEnv("DATABASE_URL");
  },
  get webhookUrl(): string {
    return requiredEnv("INTEGRATIONS_WEBHOOK_URL");
  },
  get secret(): string {
    return requiredEnv("CLERK_WEBHOOK_SIGNING_SECRET");
  },
};

const T0 = Date.UTC(2026, 0, 5, 9, 0, 0);
const min = 60_000;
export const at = (minutes: number): Date => new Date(T0 + minutes * min);

export const alice: UserSpec = {
  id: "user_alice",
  firstName: "Alice",
  lastName: "Archer",
  username: "alice",
  email: "alice@acme.test",
  externalId: "crm-1001",
  publicMetadata: { plan: "pro" },
  privateMetadata: { stripeCustomerId: "cus_alice" },
  createdAt: T0,
  updatedAt: T0,
};
const aliceRenamed: UserSpec = { ...alice, username: "alice.archer", updatedAt: T0 + 30 * min };
export const bob: UserSpec = {
  id: "user_bob",
  firstName: "Bob",
  lastName: "Baker",
  username: "bob",
  email: "bob@globex.test",
  privateMetadata: { stripeCustomerId: "cus_bob" },
  createdAt: T0 + 1 * min,
  updatedAt: T0 + 1 * min,
};
export const carol: UserSpec = {
  id: "user_carol",
  firstName: "Carol",
  lastName: "Clark",
  username: "carol",
  email: "carol@acme.test",
  createdAt: T0 + 2 * min,
  updatedAt: T0 + 2 * min,
};

export const acme: OrgSpec = {
  id: "org_acme",
  name: "Acme Corp",
  slug: "acme",
  createdBy: alice.id,
  membersCount: 1,
  publicMetadata: { tier: "enterprise" },
  privateMetadata: { crmId: "ORG-1" },
  createdAt: T0 + 10 * min,
  updatedAt: T0 + 10 * min,
};
export const globex: OrgSpec = {
  id: "org_globex",
  name: "Globex",
  slug: "globex",
  createdBy: bob.id,
  membersCount: 1,
  createdAt: T0 + 11 * min,
  updatedAt: T0 + 11 * min,
};
export const initech: OrgSpec = {
  id: "org_initech",
  name: "Initech",
  slug: "initech",
  createdBy: bob.id,
  membersCount: 1,
  createdAt: T0 + 12 * min,
  updatedAt: T0 + 12 * min,
};
const acmeWithCarol: OrgSpec = { ...acme, membersCount: 2, updatedAt: T0 + 21 * min };
const globexWithAlice: OrgSpec = { ...globex, membersCount: 2, updatedAt: T0 + 20 * min };

const membership = (id: string, user: UserSpec, org: OrgSpec, role: MembershipSpec["role"], minute: number) =>
  membershipObject({ id, user, org, role, createdAt: T0 + minute * min, updatedAt: T0 + minute * min });

export const ids = {
  aliceAcme: "orgmem_alice_acme",
  bobGlobex: "orgmem_bob_globex",
  bobInitech: "orgmem_bob_initech",
  aliceGlobex: "orgmem_alice_globex",
  carolAcme: "orgmem_carol_acme",
} as const;

/** When the deletions happened (the envelope timestamp dates them). */
export const carolDeletedAt = at(40);
export const initechDeletedAt = at(41);

/** Every event of the scenario, in the order Clerk would send them. */
const events: Array<[type: string, timestampMs: number, data: JsonObject]> = [
  ["user.created", T0, userObject(alice)],
  ["user.created", T0 + 1 * min, userObject(bob)],
  ["user.created", T0 + 2 * min, userObject(carol)],
  ["organization.created", T0 + 10 * min, organizationObject(acme)],
  ["organization.created", T0 + 11 * min, organizationObject(globex)],
  ["organization.created", T0 + 12 * min, organizationObject(initech)],
  ["organizationMembership.created", T0 + 10 * min, membership(ids.aliceAcme, alice, acme, "org:admin", 10)],
  ["organizationMembership.created", T0 + 11 * min, membership(ids.bobGlobex, bob, globex, "org:admin", 11)],
  ["organizationMembership.created", T0 + 12 * min, membership(ids.bobInitech, bob, initech, "org:admin", 12)],
  [
    "organizationMembership.created",
    T0 + 20 * min,
    membership(ids.aliceGlobex, alice, globexWithAlice, "org:member", 20),
  ],
  ["organizationMembership.created", T0 + 21 * min, membership(ids.carolAcme, carol, acmeWithCarol, "org:member", 21)],
  ["user.updated", T0 + 30 * min, userObject(aliceRenamed)],
  ["user.deleted", carolDeletedAt.getTime(), deletedObject("user", carol.id)],
  ["organization.deleted", initechDeletedAt.getTime(), deletedObject("organization", initech.id)],
];

/** Every event of the scenario with its fixed svix-id. */
export const deliveries: Delivery[] = events.map(([type, timestamp, data], i) =>
  delivery(envelope(type, timestamp, data), `msg_scenario_${String(i + 1).padStart(2, "0")}`),
);

export async function waitUntil<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  { timeoutMs = 60_000, intervalMs = 100 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * Posts `list` to the gateway (each must be answered 202 "queued") and waits until the worker has
 * processed all of them.
 */
export async function deliverAll(list: readonly Delivery[], what: string): Promise<void> {
  for (const d of list) {
    const res = await post(env.webhookUrl, env.secret, d);
    if (res.status !== 202 || res.body["status"] !== "queued") {
      throw new Error(`${d.event.type} ${d.svixId}: gateway answered ${res.status} ${JSON.stringify(res.body)}`);
    }
  }
  const client = new pg.Client({ connectionString: env.databaseUrl });
  await client.connect();
  try {
    const svixIds = list.map((d) => d.svixId);
    await waitUntil(`the worker to process every ${what}`, async () => {
      const { rows } = await client.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM clerk.webhook_events WHERE svix_id = ANY($1) AND processed_at IS NOT NULL",
        [svixIds],
      );
      return rows[0]!.n === svixIds.length ? true : undefined;
    });
  } finally {
    await client.end();
  }
}

/** Posts every scenario event and waits until the worker has processed all of them. */
export async function ensureScenario(): Promise<void> {
  await deliverAll(deliveries, "scenario event");
}
