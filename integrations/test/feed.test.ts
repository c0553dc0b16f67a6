// The change feed from Node, on the database the real worker fills from the scenario's signed
// webhooks (posted to the real gateway): `waitForUser` resolves once the version asked for is
// synced (a tombstone counts) and to null at the timeout otherwise; the cursor consumer example
// handles each change exactly once, in position order, and repeats nothing after a restart.
// `waitFor` (and `clerk.wait_for` in SQL) for the rest of the catalogue, on its fixtures. Only the
// scenario's and the fixtures' objects are used: the other suites assert the whole tables.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import pg from "pg";

import { ChangeFeed } from "../feed/change-feed.js";
import { CURSOR_TABLE, OUTBOX_TABLE, exampleHandler, runConsumer } from "../feed/consumer-example.js";
import { cat, ensureCatalogue, versions } from "./support/catalogue.js";
import { alice, bob, carol, ensureScenario, env, ids, waitUntil } from "./support/scenario.js";

const minute = 60_000;

describe("change feed (integrations/feed)", () => {
  let feed: ChangeFeed;
  let pool: pg.Pool;
  /** Consumers still running when a test fails: stopped in `after` so the process can exit. */
  const running: Array<{ stop: AbortController; done: Promise<void> }> = [];

  before(async () => {
    feed = new ChangeFeed(env.databaseUrl);
    await feed.connect();
    pool = new pg.Pool({ connectionString: env.databaseUrl, max: 2 });
  });
  after(async () => {
    for (const r of running) r.stop.abort();
    await Promise.allSettled(running.map((r) => r.done));
    await feed.close();
    await pool.end();
  });

  test("waitForUser resolves with the row at the version asked, a tombstone included, and to null at the timeout", async () => {
    // Alice is renamed 30 minutes after she signs up (scenario.ts); wait for that version.
    const renamed = feed.waitForUser(alice.id, { version: alice.updatedAt + 30 * minute, timeout: 60_000 });
    await ensureScenario();
    assert.equal((await renamed)?.["username"], "alice.archer");
    const never = await feed.waitForUser(alice.id, { version: alice.updatedAt + 365 * 24 * 60 * minute, timeout: 300 });
    assert.equal(never, null, "a version that never comes: null after the timeout");
    const deleted = await feed.waitForUser(carol.id, { version: Date.now(), timeout: 5_000 });
    assert.ok(deleted?.["deleted_at"], "a deleted user is as synced as it will get");
  });

  test("waitFor waits for any resource: a session's final version, a subscription item, a tombstone; null at the timeout", async () => {
    const ended = feed.waitFor("session", cat.alicePhone, { version: versions.alicePhoneEnded, timeout: 60_000 });
    const item = feed.waitFor("subscription_item", cat.aliceItem, { version: versions.aliceItemActive, timeout: 60_000 });
    await ensureCatalogue();
    assert.equal((await ended)?.["status"], "ended");
    assert.equal((await item)?.["plan_slug"], "pro");
    assert.equal((await feed.waitFor("role", cat.role, { timeout: 5_000 }))?.["key"], "org:content_manager");
    // Carol's session was ended with her: its tombstone is as synced as it will get.
    const tablet = await feed.waitFor("session", cat.carolTablet, { version: Date.now(), timeout: 5_000 });
    assert.ok(tablet?.["deleted_at"]);
    const later = versions.aliceSubscriptionActive.getTime() + 24 * 60 * minute;
    assert.equal(await feed.waitFor("subscription", cat.aliceSubscription, { version: later, timeout: 300 }), null);
    assert.equal(await feed.waitFor("payment_attempt", "pa_never_sent", { timeout: 300 }), null);
    await assert.rejects(feed.waitFor("bogus" as never, "x"), /unknown resource "bogus"/);
  });

  test("clerk.wait_for (migration 17) answers for the new resources in SQL and raises for an unknown one", async () => {
    await ensureCatalogue();
    const wait = async (resource: string, id: string, version: Date, timeout: string) =>
      (await pool.query<{ ok: boolean }>("SELECT clerk.wait_for($1, $2, $3, $4::interval) AS ok", [resource, id, version, timeout]))
        .rows[0]!.ok;
    assert.equal(await wait("session", cat.alicePhone, versions.alicePhoneEnded, "5 seconds"), true);
    assert.equal(await wait("subscription", cat.aliceSubscription, versions.aliceSubscriptionActive, "5 seconds"), true);
    assert.equal(await wait("invitation", cat.acmeInvitation, new Date(), "50 milliseconds"), false);
    await assert.rejects(wait("sessions", cat.alicePhone, new Date(), "1 second"), /unknown resource sessions/);
  });

  test("the cursor consumer example handles each change once, in order, and repeats nothing after a restart", async () => {
    await ensureScenario();
    await pool.query(OUTBOX_TABLE);
    await pool.query(CURSOR_TABLE);
    const name = `example-${randomUUID()}`;
    const run = () => {
      const stop = new AbortController();
      let idle = 0;
      const done = runConsumer({
        databaseUrl: env.databaseUrl,
        name,
        handle: exampleHandler,
        signal: stop.signal,
        onIdle: () => {
          idle += 1;
        },
      });
      running.push({ stop, done });
      return { stop, done, idled: () => idle > 0 };
    };
    const last = async () => {
      const { rows } = await pool.query<{ n: string }>(
        "SELECT coalesce(max(position), 0) AS n FROM clerk.changes WHERE object_id = ANY($1)",
        [[alice.id, bob.id, carol.id, ids.carolAcme, ids.bobInitech]],
      );
      return Number(rows[0]!.n);
    };
    const cursor = async () => {
      const { rows } = await pool.query<{ position: string }>("SELECT position FROM app_change_cursor WHERE name = $1", [name]);
      return Number(rows[0]?.position ?? 0);
    };
    const scenarioLast = await waitUntil("the scenario's changes to be positioned", async () => {
      const { rows } = await pool.query("SELECT 1 FROM clerk.changes WHERE position IS NULL LIMIT 1");
      return rows.length === 0 ? await last() : undefined;
    });
    const outbox = async () =>
      (
        await pool.query<{ what: string; object_id: string }>(
          "SELECT what, object_id FROM app_outbox WHERE object_id = ANY($1) ORDER BY position",
          [[alice.id, bob.id, carol.id, ids.carolAcme, ids.bobInitech]],
        )
      ).rows.map((r) => `${r.what} ${r.object_id}`);

    const first = run();
    await waitUntil("the consumer to pass the scenario", async () => ((await cursor()) >= scenarioLast ? true : undefined));
    first.stop.abort();
    await first.done;
    const handled = await outbox();
    assert.deepEqual(
      [...handled].sort(),
      [
        `revoke-access ${ids.bobInitech}`,
        `revoke-access ${ids.carolAcme}`,
        `welcome-mail ${alice.id}`,
        `welcome-mail ${bob.id}`,
        `welcome-mail ${carol.id}`,
      ],
      "a welcome mail per user created, a revocation per membership ended",
    );
    assert.ok(
      handled.indexOf(`welcome-mail ${carol.id}`) < handled.indexOf(`revoke-access ${ids.carolAcme}`),
      "in position order",
    );

    const before = await cursor();
    const second = run();
    await waitUntil("the restarted consumer to catch up", async () => (second.idled() ? true : undefined));
    second.stop.abort();
    await second.done;
    assert.deepEqual(await outbox(), handled, "nothing repeated after the restart");
    assert.ok((await cursor()) >= before);
  });
});
