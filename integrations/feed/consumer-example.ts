// An application consuming the change feed through its cursor (docs/change-feed.md): "send a
// welcome mail when a user appears, revoke access when a membership ends", each exactly once.
//
// The consumer keeps its position in a table of its own and moves it in the same transaction as
// the effects of the changes it handled: a crash before the commit handles those changes again
// with nothing half done, a crash after it never repeats them. `LISTEN clerk_changes` (through
// `ChangeFeed.idle`) wakes it as soon as new changes are positioned; the poll behind it covers a
// lost notification. Positions never skip (docs/change-feed.md), so "after my position" is all it
// needs to remember.

import pg from "pg";

import { type Change, ChangeFeed, readChanges } from "./change-feed.js";

export interface ConsumerOptions {
  databaseUrl: string;
  /** The consumer's name: its row in `app_change_cursor`. */
  name: string;
  /** Runs inside the transaction that moves the cursor past `change`. */
  handle: (change: Change, tx: pg.PoolClient) => Promise<void>;
  signal: AbortSignal;
  /** Called each time the consumer has caught up with the feed (before it waits). */
  onIdle?: () => void;
}

/** The application's table of cursors (its own schema, not `clerk`). */
export const CURSOR_TABLE = `CREATE TABLE IF NOT EXISTS app_change_cursor (
  name text PRIMARY KEY,
  position bigint NOT NULL DEFAULT 0
)`;

export async function runConsumer({ databaseUrl, name, handle, signal, onIdle }: ConsumerOptions): Promise<void> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const feed = new ChangeFeed(databaseUrl);
  try {
    await pool.query(CURSOR_TABLE);
    await pool.query("INSERT INTO app_change_cursor (name) VALUES ($1) ON CONFLICT DO NOTHING", [name]);
    await feed.connect();
    while (!signal.aborted) {
      const handled = await step(pool, name, handle);
      if (handled === 0) {
        onIdle?.();
        await feed.idle();
      }
    }
  } finally {
    await feed.close();
    await pool.end();
  }
}

/** One transaction: lock the cursor, handle the next changes, move it. Returns how many. */
async function step(pool: pg.Pool, name: string, handle: ConsumerOptions["handle"]): Promise<number> {
  const tx = await pool.connect();
  try {
    await tx.query("BEGIN");
    const { rows } = await tx.query<{ position: string }>(
      "SELECT position FROM app_change_cursor WHERE name = $1 FOR UPDATE",
      [name],
    );
    const changes = await readChanges(tx, Number(rows[0]!.position), { limit: 200 });
    for (const change of changes) await handle(change, tx);
    if (changes.length > 0) {
      await tx.query("UPDATE app_change_cursor SET position = $2 WHERE name = $1", [
        name,
        changes[changes.length - 1]!.position,
      ]);
    }
    await tx.query("COMMIT");
    return changes.length;
  } catch (e) {
    await tx.query("ROLLBACK").catch(() => {});
    throw e;
  } finally {
    tx.release();
  }
}

/** The example's effects: what an application would do, written to its own table. */
export const OUTBOX_TABLE = `CREATE TABLE IF NOT EXISTS app_outbox (
  position bigint PRIMARY KEY,
  what text NOT NULL,
  object_id text NOT NULL
)`;

export async function exampleHandler(change: Change, tx: pg.PoolClient): Promise<void> {
  const what =
    change.resource === "user" && change.operation === "created"
      ? "welcome-mail"
      : change.resource === "membership" && change.operation === "deleted"
        ? "revoke-access"
        : null;
  if (what) {
    // The primary key makes a repeat impossible to miss in the test: exactly once or it fails.
    await tx.query("INSERT INTO app_outbox (position, what, object_id) VALUES ($1, $2, $3)", [
      change.position,
      what,
      change.objectId,
    ]);
  }
}
