// Builds Clerk webhook events (the shapes Clerk sends) and posts them to the clerk-sync gateway
// signed the way Svix signs them.

import { createHmac, randomUUID } from "node:crypto";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface ClerkEvent {
  type: string;
  object: "event";
  /** Milliseconds since the epoch; dates a deletion. */
  timestamp: number;
  instance_id: string;
  data: JsonObject;
  /** Clerk adds this to every event; clerk-sync ignores it. */
  event_attributes: JsonObject;
}

const INSTANCE_ID = "ins_2integrationsTestInstance0";

export function envelope(type: string, timestamp: number, data: JsonObject): ClerkEvent {
  return {
    type,
    object: "event",
    timestamp,
    instance_id: INSTANCE_ID,
    data,
    event_attributes: { http_request: { client_ip: "127.0.0.1", user_agent: "integration-test" } },
  };
}

export interface UserSpec {
  id: string;
  firstName: string;
  lastName: string;
  username: string;
  email: string;
  externalId?: string;
  publicMetadata?: JsonObject;
  privateMetadata?: JsonObject;
  createdAt: number;
  updatedAt: number;
}

/** A Clerk `User` object as in `user.created` / `user.updated`. */
export function userObject(u: UserSpec): JsonObject {
  const emailId = `idn_${u.id.slice("user_".length)}Email`;
  return {
    id: u.id,
    object: "user",
    external_id: u.externalId ?? null,
    username: u.username,
    first_name: u.firstName,
    last_name: u.lastName,
    image_url: `https://img.clerk.com/${u.id}`,
    has_image: false,
    primary_email_address_id: emailId,
    // A secondary address first: clerk-sync must resolve the primary one by id.
    email_addresses: [
      {
        id: `${emailId}Old`,
        object: "email_address",
        email_address: `old.${u.email}`,
        verification: { status: "verified", strategy: "email_code" },
        linked_to: [],
      },
      {
        id: emailId,
        object: "email_address",
        email_address: u.email,
        verification: { status: "verified", strategy: "email_code" },
        linked_to: [],
      },
    ],
    primary_phone_number_id: null,
    phone_numbers: [],
    external_accounts: [],
    public_metadata: u.publicMetadata ?? {},
    private_metadata: u.privateMetadata ?? {},
    unsafe_metadata: {},
    banned: false,
    locked: false,
    password_enabled: true,
    two_factor_enabled: false,
    last_sign_in_at: null,
    created_at: u.createdAt,
    updated_at: u.updatedAt,
  };
}

export interface OrgSpec {
  id: string;
  name: string;
  slug: string;
  createdBy: string;
  membersCount: number;
  publicMetadata?: JsonObject;
  privateMetadata?: JsonObject;
  createdAt: number;
  updatedAt: number;
}

/** A Clerk `Organization` object as in `organization.created` and nested in memberships. */
export function organizationObject(o: OrgSpec): JsonObject {
  return {
    id: o.id,
    object: "organization",
    name: o.name,
    slug: o.slug,
    image_url: `https://img.clerk.com/${o.id}`,
    has_image: false,
    created_by: o.createdBy,
    members_count: o.membersCount,
    max_allowed_memberships: 5,
    admin_delete_enabled: true,
    pending_invitations_count: 0,
    public_metadata: o.publicMetadata ?? {},
    private_metadata: o.privateMetadata ?? {},
    created_at: o.createdAt,
    updated_at: o.updatedAt,
  };
}

export interface MembershipSpec {
  id: string;
  user: UserSpec;
  org: OrgSpec;
  role: "org:admin" | "org:member";
  createdAt: number;
  updatedAt: number;
}

const PERMISSIONS: Record<MembershipSpec["role"], string[]> = {
  "org:admin": ["org:sys_profile:manage", "org:sys_memberships:read", "org:sys_memberships:manage"],
  "org:member": ["org:sys_memberships:read"],
};

/** A Clerk `OrganizationMembership` object: the user only appears as `public_user_data`. */
export function membershipObject(m: MembershipSpec): JsonObject {
  return {
    id: m.id,
    object: "organization_membership",
    role: m.role,
    role_name: m.role === "org:admin" ? "Admin" : "Member",
    permissions: PERMISSIONS[m.role],
    public_metadata: {},
    private_metadata: {},
    organization: organizationObject(m.org),
    public_user_data: {
      user_id: m.user.id,
      first_name: m.user.firstName,
      last_name: m.user.lastName,
      identifier: m.user.email,
      username: m.user.username,
      image_url: `https://img.clerk.com/${m.user.id}`,
      has_image: false,
    },
    created_at: m.createdAt,
    updated_at: m.updatedAt,
  };
}

/** `user.deleted` / `organization.deleted` carry a DeletedObject. */
export function deletedObject(object: "user" | "organization", id: string): JsonObject {
  return { id, object, deleted: true };
}

/** The Svix signature headers for `body`, as Svix computes them. */
export function svixHeaders(secret: string, svixId: string, body: string, nowSeconds: number): Record<string, string> {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const signature = createHmac("sha256", key).update(`${svixId}.${nowSeconds}.${body}`).digest("base64");
  return {
    "svix-id": svixId,
    "svix-timestamp": String(nowSeconds),
    "svix-signature": `v1,${signature}`,
  };
}

export interface Delivery {
  svixId: string;
  event: ClerkEvent;
}

export function delivery(event: ClerkEvent, svixId: string = `msg_${randomUUID().replaceAll("-", "")}`): Delivery {
  return { svixId, event };
}

/** POSTs one signed delivery; resolves with the HTTP status and the JSON answer. */
export async function post(
  url: string,
  secret: string,
  d: Delivery,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const body = JSON.stringify(d.event);
  const headers = svixHeaders(secret, d.svixId, body, Math.floor(Date.now() / 1000));
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: res.status, body: parsed };
}
