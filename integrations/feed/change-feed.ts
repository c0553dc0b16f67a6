// The change feed from Node (docs/change-feed.md): `clerk.changes` read by position, woken by
// `LISTEN clerk_changes`, and "wait for sync" helpers on top of it.
//
// One dedicated `pg.Client` per `ChangeFeed`: LISTEN needs a session of its own (a pooled
// connection would lose it on release). Notifications only say "something new up to position P";
// every read goes to the tables, so a lost notification (a dropped connection) costs at most the
// poll interval, never a change.

import pg from "pg";

/** The resources of `clerk.changes` (and of `clerk.wait_for`), one per table of schema `clerk`. */
export type Resource =
  | "user"
  | "organization"
  | "membership"
  | "session"
  | "invitation"
  | "role"
  | "permission"
  | "domain"
  | "waitlist_entry"
  | "subscription"
  | "subscription_item"
  | "payment_attempt";

/** A row of `clerk.changes`. */
export interface Change {
  position: number;
  resource: Resource;
  objectId: string;
  operation: "created" | "updated" | "deleted";
  /** The row's `updated_at` after the change: Clerk's version of the object. */
  version: Date | null;
  /** The columns whose value changed. */
  changed: string[];
  svixId: string | null;
  eventType: string | null;
  committedAt: Date;
}

export interface WaitOptions {
  /** Give up after this long (default 10 s); the helpers then resolve to `null`. */
  timeout?: number;
  /**
   * The version to wait for: the object's `updated_at` as Clerk reports it (a `Date` or epoch
   * milliseconds). Without it, any version will do: the object exists (or was deleted).
   */
  version?: Date | number;
}

const TABLES: Record<Resource, string> = {
  user: "clerk.users",
  organization: "clerk.organizations",
  membership: "clerk.organization_memberships",
  session: "clerk.sessions",
  invitation: "clerk.organization_invitations",
  role: "clerk.roles",
  permission: "clerk.permissions",
  domain: "clerk.organization_domains",
  waitlist_entry: "clerk.waitlist_entries",
  subscription: "clerk.subscriptions",
  subscription_item: "clerk.subscription_items",
  payment_attempt: "clerk.payment_attempts",
};

/** How often a waiter looks again with no notification (a notification can be lost). */
const POLL_MS = 1_000;

export class ChangeFeed {
  readonly #client: pg.Client;
  #generation = 0;
  #wake: Array<() => void> = [];
  #connected: Promise<void> | undefined;

  constructor(config: string | pg.ClientConfig) {
    this.#client = new pg.Client(typeof config === "string" ? { connectionString: config } : config);
    this.#client.on("notification", () => {
      this.#generation += 1;
      for (const wake of this.#wake.splice(0)) wake();
    });
  }

  /** Connects and LISTENs (the helpers call it; call it yourself to fail early). */
  connect(): Promise<void> {
    this.#connected ??= (async () => {
      await this.#client.connect();
      await this.#client.query("LISTEN clerk_changes");
    })();
    return this.#connected;
  }

  async close(): Promise<void> {
    for (const wake of this.#wake.splice(0)) wake();
    if (this.#connected) await this.#client.end();
  }

  /**
   * Waits until `clerk.users` has the user at `version` or newer (or as a tombstone): after a
   * sign-up redirect, say. Resolves to the row, or `null` after `timeout`.
   */
  waitForUser(id: string, options: WaitOptions = {}): Promise<Record<string, unknown> | null> {
    return this.waitFor("user", id, options);
  }

  /**
   * As [`waitForUser`], for any resource: `waitFor("subscription_item", itemId, { version })` after a
   * checkout, say. Every table has `updated_at` and `deleted_at`; a row tombstoned with its user (a
   * session, an invitation, a Billing object) counts as synced, as a deleted object does. Throws for
   * a name that is not a resource.
   */
  async waitFor(resource: Resource, id: string, options: WaitOptions = {}): Promise<Record<string, unknown> | null> {
    const table = Object.hasOwn(TABLES, resource) ? TABLES[resource] : undefined;
    if (!table) throw new Error(`unknown resource ${JSON.stringify(resource)}: one of ${Object.keys(TABLES).join(", ")}`);
    await this.connect();
    const deadline = Date.now() + (options.timeout ?? 10_000);
    const version = options.version === undefined ? null : new Date(options.version);
    for (;;) {
      // Read the generation first: a notification that arrives during the query is not missed.
      const seen = this.#generation;
      const { rows } = await this.#client.query(
        `SELECT * FROM ${table} WHERE id = $1 AND (deleted_at IS NOT NULL OR $2::timestamptz IS NULL OR updated_at >= $2)`,
        [id, version],
      );
      if (rows[0]) return rows[0] as Record<string, unknown>;
      const left = deadline - Date.now();
      if (left <= 0) return null;
      if (this.#generation === seen) await this.#nextNotification(Math.min(left, POLL_MS));
    }
  }

  /** Up to `limit` changes after `position`, in position order. */
  async changesAfter(position: number, options: { resource?: Resource; limit?: number } = {}): Promise<Change[]> {
    await this.connect();
    return readChanges(this.#client, position, options);
  }

  /** Resolves at the next notification, or after `ms`. */
  #nextNotification(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake.push(done);
    });
  }

  /** Waits for a notification or `ms` (for consumers that read the cursor themselves). */
  async idle(ms: number = POLL_MS): Promise<void> {
    await this.connect();
    await this.#nextNotification(ms);
  }
}

/** Reads changes after `position` on any client or pool (a consumer's own transaction, say). */
export async function readChanges(
  client: pg.ClientBase | pg.Pool,
  position: number,
  { resource, limit = 500 }: { resource?: Resource; limit?: number } = {},
): Promise<Change[]> {
  const { rows } = await client.query(
    `SELECT position, resource, object_id, operation, version, changed, svix_id, event_type, committed_at
       FROM clerk.changes WHERE position > $1 AND ($2::text IS NULL OR resource = $2)
      ORDER BY position LIMIT $3`,
    [position, resource ?? null, limit],
  );
  return rows.map((r) => ({
    position: Number(r.position),
    resource: r.resource,
    objectId: r.object_id,
    operation: r.operation,
    version: r.version,
    changed: r.changed,
    svixId: r.svix_id,
    eventType: r.event_type,
    committedAt: r.committed_at,
  }));
}
