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
// Mirrors migrations/20261127000001_clerk_schema.sql, and 11 to 14 and 18 for the rest of Clerk's
// catalogue (sessions, invitations, roles, permissions, domains, the waitlist, Billing); the
// integration test compares every column (name, type, nullability) with the database
// `clerk-sync-worker migrate` created.

import { relations } from "drizzle-orm";
import { bigint, boolean, index, integer, jsonb, pgSchema, text, timestamp } from "drizzle-orm/pg-core";

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

// The rest of Clerk's catalogue (issue 19). Clerk never deletes a session, an invitation, a waitlist
// entry or a Billing object: their `deletedAt` is set when the user they belong to is deleted, and
// their personal columns are NULL from then on.

/** The bookkeeping columns every table has. */
const bookkeeping = () => ({
  createdAt: ts("created_at"),
  /** Clerk's `updated_at`: clerk-sync's ordering guard compares it. */
  updatedAt: ts("updated_at"),
  deletedAt: ts("deleted_at"),
  /** The latest `data` object exactly as Clerk sent it. */
  raw: jsonb("raw").$type<Record<string, unknown>>(),
  syncedAt: ts("synced_at").notNull().defaultNow(),
  /** Tiebreak of clerk-sync's version order (envelope time, svix-id); not for applications. */
  versionAt: ts("version_at"),
  versionSvixId: text("version_svix_id"),
});

/** Amounts are in the currency's minor unit (cents): well within a JavaScript number. */
const minorUnits = (name: string) => bigint(name, { mode: "number" });

export const sessions = clerk.table(
  "sessions",
  {
    /** Clerk's session id, `sess_...`: a session token's `sid`. */
    id: text("id").primaryKey(),
    userId: text("user_id"),
    clientId: text("client_id"),
    /** `active`, `pending`, or a final one (`ended`, `removed`, `revoked`) that no later event undoes. */
    status: text("status"),
    lastActiveAt: ts("last_active_at"),
    lastActiveOrganizationId: text("last_active_organization_id"),
    expireAt: ts("expire_at"),
    abandonAt: ts("abandon_at"),
    /** Browser, device, IP address, city: personal data, removed when the user is deleted. */
    latestActivity: jsonb("latest_activity").$type<Record<string, unknown>>(),
    ...bookkeeping(),
  },
  (t) => [index("sessions_user_id_idx").on(t.userId)],
);

export const organizationInvitations = clerk.table(
  "organization_invitations",
  {
    /** Clerk's invitation id, `orginv_...`. */
    id: text("id").primaryKey(),
    organizationId: text("organization_id"),
    emailAddress: text("email_address"),
    role: text("role"),
    /** `pending`, `accepted` or `revoked` (final: never undone), `expired`. */
    status: text("status"),
    /** The member who sent it. */
    inviterId: text("inviter_id"),
    /** The user who accepted it. */
    userId: text("user_id"),
    publicMetadata: jsonb("public_metadata").$type<ClerkMetadata>(),
    privateMetadata: jsonb("private_metadata").$type<ClerkMetadata>(),
    expiresAt: ts("expires_at"),
    ...bookkeeping(),
  },
  (t) => [
    index("organization_invitations_organization_id_idx").on(t.organizationId),
    index("organization_invitations_user_id_idx").on(t.userId),
    index("organization_invitations_inviter_id_idx").on(t.inviterId),
  ],
);

export const roles = clerk.table(
  "roles",
  {
    /** Clerk's role id, `role_...`; roles are instance-wide. */
    id: text("id").primaryKey(),
    /** What a membership's `role` holds, e.g. `org:admin`. */
    key: text("key"),
    name: text("name"),
    description: text("description"),
    isCreatorEligible: boolean("is_creator_eligible"),
    /** The role's permission keys (`org:posts:create`, ...); the full objects are in `raw`. */
    permissions: text("permissions").array(),
    ...bookkeeping(),
    /** `reconcile` when `clerk-sync reconcile` made the tombstone; NULL when Clerk's deletion event did. */
    deletedBy: text("deleted_by"),
  },
  (t) => [index("roles_key_idx").on(t.key)],
);

export const permissions = clerk.table("permissions", {
  /** Clerk's permission id, `perm_...`. */
  id: text("id").primaryKey(),
  /** e.g. `org:posts:create`. */
  key: text("key"),
  name: text("name"),
  description: text("description"),
  /** `system` or `custom`. */
  type: text("type"),
  ...bookkeeping(),
  /** `reconcile` when `clerk-sync reconcile` made the tombstone; NULL when Clerk's deletion event did. */
  deletedBy: text("deleted_by"),
});

export const organizationDomains = clerk.table(
  "organization_domains",
  {
    /** Clerk's domain id, `orgdmn_...`. */
    id: text("id").primaryKey(),
    organizationId: text("organization_id"),
    /** e.g. `acme.com`. */
    name: text("name"),
    /** `manual_invitation`, `automatic_invitation` or `automatic_suggestion`. */
    enrollmentMode: text("enrollment_mode"),
    verificationStatus: text("verification_status"),
    verificationStrategy: text("verification_strategy"),
    /** Personal: the address that verified the affiliation; removed with the domain. */
    affiliationEmailAddress: text("affiliation_email_address"),
    totalPendingInvitations: integer("total_pending_invitations"),
    totalPendingSuggestions: integer("total_pending_suggestions"),
    ...bookkeeping(),
    /** `reconcile` when `clerk-sync reconcile` made the tombstone; NULL when Clerk's deletion event did. */
    deletedBy: text("deleted_by"),
  },
  (t) => [
    index("organization_domains_organization_id_idx").on(t.organizationId),
    index("organization_domains_name_idx").on(t.name),
  ],
);

/** Strangers' addresses: read them server-side only. */
export const waitlistEntries = clerk.table("waitlist_entries", {
  /** Clerk's waitlist entry id, `wle_...`. */
  id: text("id").primaryKey(),
  emailAddress: text("email_address"),
  /** `pending`, `invited`, `rejected`, `completed`. */
  status: text("status"),
  isLocked: boolean("is_locked"),
  /** The Clerk invitation sent from the waitlist (not an organization invitation). */
  invitationId: text("invitation_id"),
  ...bookkeeping(),
});

export const subscriptions = clerk.table(
  "subscriptions",
  {
    /** Clerk Billing's subscription id, `csub_...`. */
    id: text("id").primaryKey(),
    /** e.g. `active`, `past_due`, `canceled`, `ended`, `incomplete`. */
    status: text("status"),
    /** Clerk's payer id, `cpayer_...`. */
    payerId: text("payer_id"),
    /** The paying user, or NULL when an organization pays. */
    userId: text("user_id"),
    /** The paying organization, or NULL when a user pays. */
    organizationId: text("organization_id"),
    latestPaymentId: text("latest_payment_id"),
    paymentSourceId: text("payment_source_id"),
    activeAt: ts("active_at"),
    pastDueAt: ts("past_due_at"),
    canceledAt: ts("canceled_at"),
    endedAt: ts("ended_at"),
    ...bookkeeping(),
  },
  (t) => [
    index("subscriptions_user_id_idx").on(t.userId),
    index("subscriptions_organization_id_idx").on(t.organizationId),
  ],
);

export const subscriptionItems = clerk.table(
  "subscription_items",
  {
    /** Clerk Billing's subscription item id, `csitem_...`: one plan of a subscription. */
    id: text("id").primaryKey(),
    subscriptionId: text("subscription_id"),
    /** e.g. `active`, `upcoming`, `canceled`, `ended`, `past_due`, `incomplete`, `abandoned`. */
    status: text("status"),
    planId: text("plan_id"),
    /** Gate features on this (e.g. `pro`). */
    planSlug: text("plan_slug"),
    planName: text("plan_name"),
    /** The plan's price in the currency's minor unit. */
    amount: minorUnits("amount"),
    currency: text("currency"),
    /** `month` or `annual`. */
    interval: text("interval"),
    isFreeTrial: boolean("is_free_trial"),
    payerId: text("payer_id"),
    userId: text("user_id"),
    organizationId: text("organization_id"),
    periodStart: ts("period_start"),
    periodEnd: ts("period_end"),
    canceledAt: ts("canceled_at"),
    endedAt: ts("ended_at"),
    ...bookkeeping(),
  },
  (t) => [
    index("subscription_items_subscription_id_idx").on(t.subscriptionId),
    index("subscription_items_user_id_idx").on(t.userId),
    index("subscription_items_organization_id_idx").on(t.organizationId),
  ],
);

export const paymentAttempts = clerk.table(
  "payment_attempts",
  {
    /** Clerk Billing's payment attempt id, `pa_...`. */
    id: text("id").primaryKey(),
    paymentId: text("payment_id"),
    /** e.g. `pending`, `paid`, `failed`. */
    status: text("status"),
    /** `checkout` or `recurring`. */
    chargeType: text("charge_type"),
    payerId: text("payer_id"),
    userId: text("user_id"),
    organizationId: text("organization_id"),
    /** The grand total in the currency's minor unit. */
    amount: minorUnits("amount"),
    currency: text("currency"),
    billingDate: ts("billing_date"),
    paidAt: ts("paid_at"),
    failedAt: ts("failed_at"),
    statementId: text("statement_id"),
    ...bookkeeping(),
  },
  (t) => [
    index("payment_attempts_user_id_idx").on(t.userId),
    index("payment_attempts_organization_id_idx").on(t.organizationId),
  ],
);

export const usersRelations = relations(users, ({ many }) => ({
  memberships: many(organizationMemberships),
  sessions: many(sessions),
  subscriptions: many(subscriptions),
  paymentAttempts: many(paymentAttempts),
}));

export const organizationsRelations = relations(organizations, ({ many }) => ({
  memberships: many(organizationMemberships),
  invitations: many(organizationInvitations),
  domains: many(organizationDomains),
  subscriptions: many(subscriptions),
}));

export const organizationMembershipsRelations = relations(organizationMemberships, ({ one }) => ({
  user: one(users, { fields: [organizationMemberships.userId], references: [users.id] }),
  organization: one(organizations, {
    fields: [organizationMemberships.organizationId],
    references: [organizations.id],
  }),
}));

export const sessionsRelations = relations(sessions, ({ one }) => ({
  user: one(users, { fields: [sessions.userId], references: [users.id] }),
}));

export const organizationInvitationsRelations = relations(organizationInvitations, ({ one }) => ({
  organization: one(organizations, {
    fields: [organizationInvitations.organizationId],
    references: [organizations.id],
  }),
}));

export const organizationDomainsRelations = relations(organizationDomains, ({ one }) => ({
  organization: one(organizations, { fields: [organizationDomains.organizationId], references: [organizations.id] }),
}));

export const subscriptionsRelations = relations(subscriptions, ({ one, many }) => ({
  user: one(users, { fields: [subscriptions.userId], references: [users.id] }),
  organization: one(organizations, { fields: [subscriptions.organizationId], references: [organizations.id] }),
  items: many(subscriptionItems),
}));

export const subscriptionItemsRelations = relations(subscriptionItems, ({ one }) => ({
  subscription: one(subscriptions, { fields: [subscriptionItems.subscriptionId], references: [subscriptions.id] }),
}));

export const paymentAttemptsRelations = relations(paymentAttempts, ({ one }) => ({
  user: one(users, { fields: [paymentAttempts.userId], references: [users.id] }),
}));

export type ClerkUser = typeof users.$inferSelect;
export type ClerkOrganization = typeof organizations.$inferSelect;
export type ClerkOrganizationMembership = typeof organizationMemberships.$inferSelect;
export type ClerkSession = typeof sessions.$inferSelect;
export type ClerkOrganizationInvitation = typeof organizationInvitations.$inferSelect;
export type ClerkRole = typeof roles.$inferSelect;
export type ClerkPermission = typeof permissions.$inferSelect;
export type ClerkOrganizationDomain = typeof organizationDomains.$inferSelect;
export type ClerkWaitlistEntry = typeof waitlistEntries.$inferSelect;
export type ClerkSubscription = typeof subscriptions.$inferSelect;
export type ClerkSubscriptionItem = typeof subscriptionItems.$inferSelect;
export type ClerkPaymentAttempt = typeof paymentAttempts.$inferSelect;
