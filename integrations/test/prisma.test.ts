// Validates integrations/prisma/schema.prisma offline with @prisma/prisma-schema-wasm (the schema
// validator and formatter the Prisma CLI embeds; no engine download), then compares its Clerk
// models with the tables `clerk-sync-worker migrate` created.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { CLERK_TABLES, clerkColumns, columnMap } from "./support/columns.js";

const require = createRequire(import.meta.url);
const prismaWasm = require("@prisma/prisma-schema-wasm") as {
  validate(params: string): void;
  lint(input: string): string;
  format(schema: string, params: string): string;
  get_dmmf(params: string): string;
};
const wasmVersion = (require("@prisma/prisma-schema-wasm/package.json") as { version: string }).version;

const schemaPath = fileURLToPath(new URL("../../prisma/schema.prisma", import.meta.url));
const schema = readFileSync(schemaPath, "utf8");

interface DmmfField {
  name: string;
  dbName?: string | null;
  kind: "scalar" | "object" | "enum" | "unsupported";
  type: string;
  isList: boolean;
  isRequired: boolean;
  nativeType: [string, string[]] | null;
  relationFromFields?: string[];
  relationToFields?: string[];
}
interface DmmfModel {
  name: string;
  dbName: string | null;
  schema: string | null;
  fields: DmmfField[];
}

function validate(source: string): void {
  prismaWasm.validate(JSON.stringify({ prismaSchema: [["schema.prisma", source]], noColor: true }));
}

function models(): Map<string, DmmfModel> {
  const dmmf = JSON.parse(prismaWasm.get_dmmf(JSON.stringify({ prismaSchema: [["schema.prisma", schema]] }))) as {
    datamodel: { models: DmmfModel[] };
  };
  return new Map(dmmf.datamodel.models.map((m) => [m.name, m]));
}

const CLERK_MODELS: Record<string, (typeof CLERK_TABLES)[number]> = {
  ClerkUser: "users",
  ClerkOrganization: "organizations",
  ClerkOrganizationMembership: "organization_memberships",
  ClerkSession: "sessions",
  ClerkOrganizationInvitation: "organization_invitations",
  ClerkRole: "roles",
  ClerkPermission: "permissions",
  ClerkOrganizationDomain: "organization_domains",
  ClerkWaitlistEntry: "waitlist_entries",
  ClerkSubscription: "subscriptions",
  ClerkSubscriptionItem: "subscription_items",
  ClerkPaymentAttempt: "payment_attempts",
};

/** The Postgres type (as `format_type` prints it) a Prisma scalar field maps to. */
function postgresType(f: DmmfField): string {
  const native = f.nativeType?.[0];
  const base = (() => {
    switch (f.type) {
      case "String":
        return native === undefined || native === "Text" ? "text" : `unexpected native type ${native}`;
      case "Json":
        return native === undefined || native === "JsonB" ? "jsonb" : `unexpected native type ${native}`;
      case "Boolean":
        return "boolean";
      case "Int":
        return "integer";
      case "BigInt":
        return "bigint";
      case "DateTime":
        return native === "Timestamptz" ? "timestamp with time zone" : `DateTime without @db.Timestamptz`;
      default:
        return `unmapped Prisma type ${f.type}`;
    }
  })();
  // Prisma lists cannot be optional; the column is a nullable array.
  if (f.isList) return `${base}[]`;
  return `${base}${f.isRequired ? " not null" : ""}`;
}

describe("Prisma schema (integrations/prisma/schema.prisma)", () => {
  test(`is valid, lint-clean and formatted, per @prisma/prisma-schema-wasm ${wasmVersion}`, () => {
    console.log(`validator: @prisma/prisma-schema-wasm ${wasmVersion} (offline, no engine download)`);
    validate(schema);
    assert.deepEqual(JSON.parse(prismaWasm.lint(JSON.stringify([["schema.prisma", schema]]))), [], "lint warnings");
    const formatted = prismaWasm.format(
      schema,
      JSON.stringify({ textDocument: { uri: "file:/schema.prisma" }, options: { tabSize: 2, insertSpaces: true } }),
    );
    assert.equal(formatted, schema, "schema.prisma is not formatted as `prisma format` would");
  });

  test("the validator really validates: a model in an undeclared schema is rejected", () => {
    const broken = schema.replace('@@map("users")\n  @@schema("clerk")', '@@map("users")\n  @@schema("nope")');
    assert.notEqual(broken, schema);
    assert.throws(() => validate(broken), /nope/);
  });

  test("the first three Clerk models map to their clerk tables, related user -> memberships -> organization", () => {
    const all = models();
    for (const [model, table] of Object.entries(CLERK_MODELS)) {
      const m = all.get(model);
      assert.ok(m, `model ${model}`);
      assert.equal(m.schema, "clerk", `${model} @@schema`);
      assert.equal(m.dbName, table, `${model} @@map`);
    }
    const field = (model: string, name: string) => all.get(model)!.fields.find((f) => f.name === name);
    assert.deepEqual(
      [field("ClerkUser", "memberships")?.type, field("ClerkUser", "memberships")?.isList],
      ["ClerkOrganizationMembership", true],
    );
    assert.deepEqual(
      [field("ClerkOrganization", "memberships")?.type, field("ClerkOrganization", "memberships")?.isList],
      ["ClerkOrganizationMembership", true],
    );
    const user = field("ClerkOrganizationMembership", "user")!;
    assert.deepEqual([user.type, user.isRequired, user.relationFromFields, user.relationToFields], [
      "ClerkUser",
      false,
      ["userId"],
      ["id"],
    ]);
    const org = field("ClerkOrganizationMembership", "organization")!;
    assert.deepEqual([org.type, org.isRequired, org.relationFromFields, org.relationToFields], [
      "ClerkOrganization",
      false,
      ["organizationId"],
      ["id"],
    ]);
  });

  test("the rest of the catalogue maps to its clerk tables, with optional relations to the objects it names", () => {
    const all = models();
    assert.deepEqual(
      [...all.values()].filter((m) => m.schema === "clerk").map((m) => m.dbName).sort(),
      [...CLERK_TABLES].sort(),
      "one model per clerk table",
    );
    const relation = (model: string, name: string) => {
      const f = all.get(model)!.fields.find((f) => f.name === name);
      assert.ok(f, `${model}.${name}`);
      return [f.type, f.isList, f.isRequired, f.relationFromFields ?? null, f.relationToFields ?? null];
    };
    // Each side of each relation: optional to-one (no foreign key may be assumed), and its list.
    const expected: Array<[model: string, field: string, target: string, from: string, back: string]> = [
      ["ClerkSession", "user", "ClerkUser", "userId", "sessions"],
      ["ClerkOrganizationInvitation", "organization", "ClerkOrganization", "organizationId", "invitations"],
      ["ClerkOrganizationDomain", "organization", "ClerkOrganization", "organizationId", "domains"],
      ["ClerkSubscription", "user", "ClerkUser", "userId", "subscriptions"],
      ["ClerkSubscription", "organization", "ClerkOrganization", "organizationId", "subscriptions"],
      ["ClerkSubscriptionItem", "subscription", "ClerkSubscription", "subscriptionId", "items"],
      ["ClerkPaymentAttempt", "user", "ClerkUser", "userId", "paymentAttempts"],
    ];
    for (const [model, field, target, from, back] of expected) {
      assert.deepEqual(relation(model, field), [target, false, false, [from], ["id"]], `${model}.${field}`);
      assert.deepEqual(relation(target, back), [model, true, true, [], []], `${target}.${back}`);
    }
    const amount = all.get("ClerkSubscriptionItem")!.fields.find((f) => f.name === "amount")!;
    assert.deepEqual([amount.type, amount.isRequired], ["BigInt", false], "amounts are bigint minor units");
  });

  test("the example application model lives in public and relates to ClerkUser", () => {
    const project = models().get("Project")!;
    assert.equal(project.schema, "public");
    const owner = project.fields.find((f) => f.name === "owner")!;
    assert.deepEqual([owner.type, owner.relationFromFields, owner.relationToFields], ["ClerkUser", ["ownerId"], ["id"]]);
  });

  test(
    "every Clerk field matches a column the worker's migrations created (name, type, nullability), and every column is modelled",
    { skip: process.env["DATABASE_URL"] ? false : "DATABASE_URL is not set" },
    async () => {
      const expected: Record<string, string> = {};
      for (const [model, table] of Object.entries(CLERK_MODELS)) {
        for (const f of models().get(model)!.fields.filter((f) => f.kind === "scalar")) {
          expected[`${table}.${f.dbName ?? f.name}`] = postgresType(f);
        }
      }
      const actual = columnMap(await clerkColumns(process.env["DATABASE_URL"]!));
      assert.deepEqual(expected, actual);
      console.log(`${Object.keys(actual).length} columns of ${CLERK_TABLES.length} tables match the Prisma models`);
    },
  );
});
