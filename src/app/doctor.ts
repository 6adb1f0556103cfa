// `tpu-deploy doctor`: what usually breaks a launch, checked before anything is launched — sky and its
// API server, the accelerator in each zone, the secrets, the state directory. Each check says what to do.
import { resolveSecrets } from "../adapters/secrets.js";
import type { Config } from "../core/config.js";
import { V6E_CATALOG_ZONES } from "../core/topology.js";
import type { AppContext } from "./context.js";

// Zones where the TPU7x-capable SkyPilot build offers TPU7x Flex-start (its mig_utils._TPU_FLEX_START_ZONES).
const TPU7X_FLEX_START_ZONES = ["us-central1-c"];

export interface Check {
  check: string;
  ok: boolean;
  detail: string;
}

export async function runChecks(ctx: AppContext, config: Config, onCheck: (c: Check) => void = () => undefined): Promise<Check[]> {
  const checks: Check[] = [];
  const add = (check: string, ok: boolean, detail: string) => {
    const c = { check, ok, detail };
    checks.push(c);
    onCheck(c);
  };
  // 1. sky and its API server
  try {
    const v = await (await ctx.sky()).version();
    add(
      "sky",
      v.ok,
      v.ok
        ? "the SkyPilot API server answers (sky api info)"
        : `sky api info failed: ${v.output.trim().split("\n").at(-1)}; start it with sky api start`,
    );
  } catch (err) {
    add("sky", false, `${(err as Error).message}`);
  }
  // 2. the accelerator in each zone
  for (const zone of config.tpu.zones) {
    if (config.tpu.generation !== "v6e") {
      // The only TPU7x-capable SkyPilot located offers TPU7x Flex-start in us-central1-c alone (docs/upstream/skypilot.md §7).
      const flexStart = TPU7X_FLEX_START_ZONES.includes(zone);
      add(
        `${config.tpu.accelerator} in ${zone}`,
        flexStart,
        `${flexStart ? "" : `the known TPU7x-capable SkyPilot build offers TPU7x Flex-start only in ${TPU7X_FLEX_START_ZONES.join(", ")}; `}` +
          "TPU7x needs a TPU7x-capable SkyPilot build (instance type tpu7x-standard-4t in a Flex-start instance group; allowlist-restricted; " +
          "no spot; the VMs are deleted when tpu.maxRunHours ends); the Cloud TPU API does not serve it; " +
          "worker numbers on these VMs are read from each host's metadata and are unverified (see the README's TPU7x section)",
      );
      continue;
    }
    const inCatalog = V6E_CATALOG_ZONES.includes(zone);
    let apiNote = "";
    let apiOk = true;
    if (config.tpu.project) {
      try {
        const types = await (await ctx.tpuApi()).listAcceleratorTypes(config.tpu.project, zone);
        apiOk = types.includes(config.tpu.accelerator);
        apiNote = apiOk
          ? "; the Cloud TPU API offers it"
          : `; the Cloud TPU API does not offer it there (offers ${types.slice(0, 8).join(", ") || "nothing"})`;
      } catch (err) {
        apiNote = `; Cloud TPU API not checked (${(err as Error).message.split("\n")[0]})`;
      }
    }
    add(
      `${config.tpu.accelerator} in ${zone}`,
      inCatalog && apiOk,
      inCatalog ? `in SkyPilot's catalog${apiNote}` : `not in SkyPilot's catalog (v6e zones: ${V6E_CATALOG_ZONES.join(", ")})${apiNote}`,
    );
  }
  // 3. secrets
  try {
    resolveSecrets(config, ctx.env);
    add("secrets", true, config.server.secrets.length > 0 ? `${config.server.secrets.join(", ")} resolvable` : "none needed");
  } catch (err) {
    add("secrets", false, (err as Error).message.replace(/\n\s*/g, " "));
  }
  // 4. the state directory
  const w = ctx.store.checkWritable();
  add("state directory", w.ok, w.ok ? `${w.path} is writable` : `${w.path}: ${w.why}; set TPU_DEPLOY_HOME to a writable directory`);
  return checks;
}
