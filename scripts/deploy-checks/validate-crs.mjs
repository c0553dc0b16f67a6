// Validates KEDA and Prometheus Operator custom resources against the schemas generated from their
// upstream CRDs (@kubernetes-models/*). Input: a JSON file holding an array of
// {source, resource} objects (written by check_deploy.py). Exit 1 if any resource is invalid or of
// a kind this script does not know.
// Usage: DEPLOY_CHECKS_NODE_MODULES=DIR/node_modules node validate-crs.mjs RESOURCES.json
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const modulesDir = process.env.DEPLOY_CHECKS_NODE_MODULES;
if (!modulesDir) {
  console.error("DEPLOY_CHECKS_NODE_MODULES is not set");
  process.exit(2);
}
const load = async (spec) => import(pathToFileURL(path.join(modulesDir, spec, "index.js")).href);

const keda = await load("@kubernetes-models/keda/keda.sh/v1alpha1");
const promOp = await load("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
const models = {
  "keda.sh/v1alpha1": keda,
  "monitoring.coreos.com/v1": promOp,
};

const items = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const { source, resource } of items) {
  const id = `${source}: ${resource.kind}/${resource.metadata?.name}`;
  const Model = models[resource.apiVersion]?.[resource.kind];
  if (!Model) {
    console.error(`FAIL ${id}: no schema for ${resource.apiVersion} ${resource.kind}`);
    failed++;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`ok   ${id} (${resource.apiVersion})`);
  } catch (e) {
    console.error(`FAIL ${id}: ${e.message}`);
    failed++;
  }
}
if (items.length === 0) {
  console.error("no custom resources to validate");
  process.exit(1);
}
process.exit(failed ? 1 : 0);
