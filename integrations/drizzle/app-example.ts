// An application's own table that points at Clerk objects, the Drizzle way. This one is yours:
// drizzle-kit manages it like any other table of your app (it lives in `public`).
//
// Store Clerk ids as plain `text` columns WITHOUT `.references()`: a user can call your API the
// moment they sign up, before the webhook has reached clerk-sync, so a database foreign key to
// `clerk.users` would reject that first insert. clerk-sync never deletes or renumbers rows (deleted
// objects stay as tombstones), so the ids stay resolvable once they have arrived.

import { and, eq, isNull, relations } from "drizzle-orm";
import type { NodePgDatabase } from "drizzle-orm/node-postgres";
import { index, pgTable, serial, text, timestamp } from "drizzle-orm/pg-core";
import { organizations, users } from "./clerk-schema.js";

export const projects = pgTable(
  "projects",
  {
    id: serial("id").primaryKey(),
    name: text("name").notNull(),
    /** The Clerk user id (`auth().userId`) of the owner. */
    ownerId: text("owner_id").notNull(),
    /** The Clerk organization id, for organization-owned projects. */
    organizationId: text("organization_id"),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index("projects_owner_id_idx").on(t.ownerId), index("projects_organization_id_idx").on(t.organizationId)],
);

// A nullable column gives a nullable relation: `project.organization` is `ClerkOrganization | null`.
// (For `ownerId`, which is NOT NULL, Drizzle would type a `one()` relation as never null, which is
// not true while the user's webhook is in flight: use the left join below instead.)
export const projectsRelations = relations(projects, ({ one }) => ({
  organization: one(organizations, { fields: [projects.organizationId], references: [organizations.id] }),
}));

/**
 * Projects with their owner (null if clerk-sync has not written that user yet, or if the user was
 * deleted in Clerk): a left join, so the owner is typed `| null` honestly.
 */
export function projectsWithOwner(db: NodePgDatabase<Record<string, unknown>>) {
  return db
    .select({
      id: projects.id,
      name: projects.name,
      ownerId: projects.ownerId,
      ownerEmail: users.primaryEmailAddress,
      ownerFirstName: users.firstName,
    })
    .from(projects)
    .leftJoin(users, and(eq(users.id, projects.ownerId), isNull(users.deletedAt)))
    .orderBy(projects.id);
}
