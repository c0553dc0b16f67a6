// The rest of Clerk's catalogue on top of the scenario (issue 19): sessions, invitations, roles,
// permissions, domains, the waitlist and Billing, as the signed events in test/fixtures/catalogue/
// (whole Clerk envelopes, one file each, posted in file order). Posting is idempotent like the
// scenario's: the svix-ids are fixed (`msg_catalogue_<NN>` from the file name), so when several test
// files post them the worker applies each event once.
//
// The fixtures add no user, organization or membership (the other suites assert those tables whole):
// the invitation Dave accepts names `user_dave`, whose own events are not posted.

import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { at, deliverAll, ensureScenario } from "./scenario.js";
import { type ClerkEvent, type Delivery, delivery } from "./webhooks.js";

const dir = fileURLToPath(new URL("../../../test/fixtures/catalogue/", import.meta.url));

/** Every fixture, in file order, with its fixed svix-id. */
export const catalogueDeliveries: Delivery[] = readdirSync(dir)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((file) => {
    const event = JSON.parse(readFileSync(`${dir}/${file}`, "utf8")) as ClerkEvent;
    return delivery(event, `msg_catalogue_${file.slice(0, 2)}`);
  });

/** The event types the fixtures cover. */
export const catalogueTypes = [...new Set(catalogueDeliveries.map((d) => d.event.type))].sort();

export const cat = {
  permission: "perm_posts_create",
  role: "role_content_manager",
  waitlistEntry: "wle_dave",
  aliceLaptop: "sess_alice_laptop",
  alicePhone: "sess_alice_phone",
  bobDesktop: "sess_bob_desktop",
  carolTablet: "sess_carol_tablet",
  acmeInvitation: "orginv_acme_dave",
  globexInvitation: "orginv_globex_erin",
  initechInvitation: "orginv_initech_frank",
  acmeDomain: "orgdmn_acme",
  globexDomain: "orgdmn_globex",
  aliceSubscription: "csub_alice",
  bobSubscription: "csub_bob",
  globexSubscription: "csub_globex",
  aliceItem: "csitem_alice_pro",
  bobItem: "csitem_bob_free",
  globexItem: "csitem_globex_team",
  alicePayment: "pa_alice_1",
  bobPayment: "pa_bob_1",
  globexPayment: "pa_globex_1",
} as const;

/** Versions (`updated_at`) of the fixtures, for "wait for sync". */
export const versions = {
  /** `session.ended` of Alice's phone (`updated_at` is 230 ms past the minute). */
  alicePhoneEnded: new Date(at(33).getTime() + 230),
  aliceItemActive: at(43),
  aliceSubscriptionActive: at(43),
} as const;

/**
 * Posts the scenario, then every catalogue fixture (each must be answered 202 "queued"), and waits
 * until the worker has processed all of them.
 */
export async function ensureCatalogue(): Promise<void> {
  await ensureScenario();
  await deliverAll(catalogueDeliveries, "catalogue fixture");
}
