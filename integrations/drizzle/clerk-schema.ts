// Drizzle ORM schema for the tables clerk-sync keeps in sync with Clerk (Postgres schema `clerk`).
//
// Copy this file into your application (e.g. `src/db/clerk-schema.ts`) and pass its exports to
// `drizzle({ client, schema: { ...clerkSchema, ...yourSchema } })`.
//
// READ-ONLY. clerk-sync is the only writer of these tables: never insert, update or delete through
// them, and keep this file out of drizzle-kit's `schema` path so `drizzle-kit generate/push` never
// creates, alters or drops anything in schema `clerk` (clerk-sync's own migrations own it; see
// integrations/README.md). Give the application's database role SELECT only on schema `clerk`.
//
// TOMBSTONES. A row whose `deletedAt` is set is a deleted Clerk object: personal columns are NULL and
// the row never comes back. Filter `isNull(<table>.deletedAt)` wherever you want live objects.
//
// NO FOREIGN KEYS in the database: a membership can arrive before its user or organization, so a
// relation below may resolve to nothing for a moment. The relations are Drizzle-level only.
//
// Mirrors migrations/20261127000001_clerk_schema.sql; the integration test compares every column
// (name, type, nullability) with the database that `clerk-sync-worker migrate` created.

import { relations } from "drizzle-orm";
import { boolean, index, integer, jsonb, pgSchema, text, timestamp } from "drizzle-orm/pg-core";

/** Metadata objects are free-form JSON objects set through Clerk's API or dashboard. */
export type ClerkMetadata = Record<string, unknown>;

export const clerk = pgSchema("clerk");

/** Timestamps are Clerk's millisecond timestamps, converted exactly to `timestamptz`. */
const ts = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });

export const users = clerk.table(
  "users",
  {
    /** Clerk's user id, `user_...`: what `auth()` returns as `userId` and a session token's `sub`. */
    id: text("id").primaryKey(),
    externalId: text("external_id"),
    username: text("username"),
    firstName: text("first_name"),
    lastName: text("last_name"),
    /** Resolved through `primary_email_address_id`, not `email_addresses[0]`. */
    primaryEmailAddress: text("primary_email_address"),
    primaryPhoneNumber: text("primary_phone_number"),
    imageUrl: text("image_url"),
    publicMetadata: jsonb("public_metadata").$type<ClerkMetadata>(),
    /** Backend-only in Clerk: never send it to a browser. */
    privateMetadata: jsonb("private_metadata").$type<ClerkMetadata>(),
    unsafeMetadata: jsonb("unsafe_metadata").$type<ClerkMetadata>(),
    banned: boolean("banned"),
    locked: boolean("locked"),
    twoFactorEnabled: boolean("two_factor_enabled"),
    lastSignInAt: ts("last_sign_in_at"),
    createdAt: ts("created_at"),
    /** Clerk's `updated_at`: clerk-sync's ordering guard compares it. */
    updatedAt: ts("updated_at"),
    /** Set once the user is deleted in Clerk (tombstone). */
    deletedAt: ts("deleted_at"),
    /** The latest `data` object exactly as Clerk sent it (contains private metadata too). */
    raw: jsonb("raw").$type<Record<string, unknown>>(),
    /** When clerk-sync last wrote the row. */
    syncedAt: ts("synced_at").notNull().defaultNow(),
    /** Tiebreak of clerk-sync's version order (envelope time, svix-id); not for applications. */
    versionAt: ts("version_at"),
    versionSvixId: text("version_svix_id"),
    /** `reconcile` when `clerk-sync reconcile` made the tombstone; NULL when Clerk's deletion event did. */
    deletedBy: text("deleted_by"),
    /** The external id a `user.deleted` named: it stays the final `externalId`. */
    deletedExternalId: text("deleted_external_id"),
  },
  (t) => [
    index("users_primary_email_address_idx").on(t.primaryEmailAddress),
    index("users_username_idx").on(t.username),
    index("users_external_id_idx").on(t.externalId),
  ],
);

export const organizations = clerk.table(
  "organizations",
  {
    /** Clerk's organization id, `org_...`. */
    id: text("id").primaryKey(),
    name: text("name"),
    slug: text("slug"),
    imageUrl: text("image_url"),
    /** The Clerk user id of the creator. */
    createdBy: text("created_by"),
    membersCount: integer("members_count"),
    maxAllowedMemberships: integer("max_allowed_memberships"),
    publicMetadata: jsonb("public_metadata").$type<ClerkMetadata>(),
    privateMetadata: jsonb("private_metadata").$type<ClerkMetadata>(),
    createdAt: ts("created_at"),
    updatedAt: ts("updated_at"),
    deletedAt: ts("deleted_at"),
    raw: jsonb("raw").$type<Record<string, unknown>>(),
    syncedAt: ts("synced_at").notNull().defaultNow(),
    /** Tiebreak of clerk-sync's version order (envelope time, svix-id); not for applications. */
    versionAt: ts("version_at"),
    versionSvixId: text("version_svix_id"),
    /** `reconcile` when `clerk-sync reconcile` made the tombstone; NULL when Clerk's deletion event did. */
    deletedBy: text("deleted_by"),
    /** The stored version came from a copy nested in a membership event. */
    nested: boolean("nested").notNull().default(false),
  },
  (t) => [index("organizations_slug_idx").on(t.slug)],
);

export const organizationMemberships = clerk.table(
  "organization_memberships",
  {
    /** Clerk's membership id, `orgmem_...`. */
    id: text("id").primaryKey(),
    organizationId: text("organization_id"),
    /** From the event's `public_user_data.user_id`. */
    userId: text("user_id"),
    /** e.g. `org:admin`, `org:member`, or a custom role key. */
    role: text("role"),
    permissions: text("permissions").array(),
    publicMetadata: jsonb("public_metadata").$type<ClerkMetadata>(),
    privateMetadata: jsonb("private_metadata").$type<ClerkMetadata>(),
    createdAt: ts("created_at"),
    updatedAt: ts("updated_at"),
    /** Set when the membership is deleted, and when its user or organization is deleted. */
    deletedAt: ts("deleted_at"),
    raw: jsonb("raw").$type<Record<string, unknown>>(),
    syncedAt: ts("synced_at").notNull().defaultNow(),
    /** Tiebreak of clerk-sync's version order (envelope time, svix-id); not for applications. */
    versionAt: ts("version_at"),
    versionSvixId: text("version_svix_id"),
    /** `reconcile` when `clerk-sync reconcile` made the tombstone; NULL when Clerk's deletion event did. */
    deletedBy: text("deleted_by"),
  },
  (t) => [
    index("organization_memberships_user_id_idx").on(t.userId),
    index("organization_memberships_organization_id_idx").on(t.organizationId),
  ],
);

export const usersRelations = relations(users, ({ many }) => ({
  memberships: many(organizationMemberships),
}));

export const organizationsRelations = relations(organizations, ({ many }) => ({
  memberships: many(organizationMemberships),
}));

export const organizationMembershipsRelations = relations(organizationMemberships, ({ one }) => ({
  user: one(users, { fields: [organizationMemberships.userId], references: [users.id] }),
  organization: one(organizations, {
    fields: [organizationMemberships.organizationId],
    references: [organizations.id],
  }),
}));

export type ClerkUser = typeof users.$inferSelect;
export type ClerkOrganization = typeof organizations.$inferSelect;
export type ClerkOrganizationMembership = typeof organizationMemberships.$inferSelect;
