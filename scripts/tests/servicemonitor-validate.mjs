// Validates ServiceMonitors (a JSON array on stdin) with the prometheus-operator models of the npm
// package @kubernetes-models/prometheus-operator, installed in the directory $QUIVER_PROM_MODELS:
// types, required fields and patterns of prometheus-operator's CRD schema. That schema allows
// unknown fields, so these are not caught. Prints one line per object; exits 1 if any is invalid.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const models = process.env.QUIVER_PROM_MODELS;
const module = join(models, "node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js");
const { ServiceMonitor } = await import(pathToFileURL(module).href);
const objects = JSON.parse(readFileSync(0, "utf8"));
let invalid = 0;
for (const object of objects) {
  const name = object?.metadata?.name;
  try {
    new ServiceMonitor(object).validate();
    console.log(`   ServiceMonitor ${name}: valid`);
  } catch (e) {
    console.log(`ERROR ServiceMonitor ${name}: ${e.message}`);
    invalid += 1;
  }
}
process.exit(invalid ? 1 : 0);
