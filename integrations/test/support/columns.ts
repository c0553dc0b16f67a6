// The columns of the clerk tables as the worker's migrations created them, read from the catalog.

import pg from "pg";

export interface DbColumn {
  table: string;
  column: string;
  /** `format_type`: e.g. `text`, `jsonb`, `timestamp with time zone`, `integer`, `text[]`. */
  type: string;
  notNull: boolean;
}

export const CLERK_TABLES = [
  "users",
  "organizations",
  "organization_memberships",
  "sessions",
  "organization_invitations",
  "roles",
  "permissions",
  "organization_domains",
  "waitlist_entries",
  "subscriptions",
  "subscription_items",
  "payment_attempts",
] as const;

export async function clerkColumns(databaseUrl: string): Promise<DbColumn[]> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const { rows } = await client.query<DbColumn>(
      `SELECT c.relname AS "table", a.attname AS "column",
              format_type(a.atttypid, a.atttypmod) AS "type", a.attnotnull AS "notNull"
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'clerk' AND c.relname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum`,
      [CLERK_TABLES],
    );
    return rows;
  } finally {
    await client.end();
  }
}

/** `table.column -> "type not null?"`, for comparing whole tables in one assertion. */
export function columnMap(columns: DbColumn[]): Record<string, string> {
  return Object.fromEntries(
    columns.map((c) => [`${c.table}.${c.column}`, `${c.type}${c.notNull ? " not null" : ""}`]),
  );
}
