// Tearing a cluster down and proving it is gone: `sky down` exits 0 even when it failed, so check
// `sky status -o json` and, where it serves the slice, the Cloud TPU API.
import { nodesOfCluster } from "../adapters/tpu-api.js";
import type { Config } from "../core/config.js";
import { CloudApiError, OperationError } from "../errors.js";
import { type AppContext, sleep } from "./context.js";

export interface TeardownResult {
  existed: boolean;
  verified: boolean;
  leftoverNodes: { name: string; state: string }[];
}

export async function teardownCluster(
  ctx: AppContext,
  config: Config,
  opts: { quiet?: boolean; nameOnCloud?: string | undefined; zone?: string | undefined } = {},
): Promise<TeardownResult> {
  const sky = await ctx.sky();
  const name = config.name;
  const before = (await sky.status([name], { env: ctx.env, verbose: true })).find((r) => r.name === name);
  const nameOnCloud = before?.cluster_name_on_cloud ?? opts.nameOnCloud;
  if (before) {
    if (!opts.quiet) ctx.report.info(`sky down ${name}`);
    const r = await sky.down(name, { env: ctx.env, onLine: (l) => ctx.report.debug(`sky | ${l}`) });
    ctx.report.debug(`sky down exited ${r.exitCode}`);
  }
  // Verify: the record must be gone (a few tries: the API server may lag a moment).
  let gone = false;
  for (let i = 0; i < 5; i++) {
    const after = (await sky.status([name], { env: ctx.env })).find((r) => r.name === name);
    if (!after) {
      gone = true;
      break;
    }
    await sleep(1000);
  }
  if (!gone) {
    throw new OperationError("not_verified", `sky down ${name} did not remove the cluster (it is still in sky status)`, {
      hint: `see \`sky status -v ${name}\`, then \`sky down ${name}\`; as a last resort \`sky down --purge ${name}\` and check the console`,
    });
  }
  let leftoverNodes = await leftoverTpuNodes(ctx, config, nameOnCloud, opts.zone);
  if (leftoverNodes.length > 0) {
    // Nodes labelled as this cluster's outlive `sky down` (e.g. PREEMPTED ones SkyPilot already forgot): ours to delete.
    const api = await ctx.tpuApi();
    for (const n of leftoverNodes) {
      ctx.report.info(`deleting leftover TPU node ${n.name} (${n.state})`);
      await api.deleteNode(n.name, { signal: ctx.signal });
    }
    leftoverNodes = await leftoverTpuNodes(ctx, config, nameOnCloud, opts.zone);
  }
  if (leftoverNodes.length > 0) {
    const names = leftoverNodes.map((n) => `${n.name} (${n.state})`).join(", ");
    throw new OperationError("not_verified", `TPU nodes of ${name} still exist after sky down: ${names}`, {
      hint: "they hold quota and may bill: delete them in the console, or run tpu-deploy gc -y",
    });
  }
  return { existed: Boolean(before), verified: true, leftoverNodes: [] };
}

/** TPU nodes still labelled as the cluster's (v6e only: the API does not serve TPU7x). */
export async function leftoverTpuNodes(
  ctx: AppContext,
  config: Config,
  nameOnCloud: string | undefined,
  zone: string | undefined,
): Promise<{ name: string; state: string }[]> {
  const project = config.tpu.project;
  if (config.tpu.generation !== "v6e" || !project || !nameOnCloud) return [];
  try {
    const api = await ctx.tpuApi();
    const zones = zone ? [zone] : config.tpu.zones;
    const found: { name: string; state: string }[] = [];
    for (const z of zones) {
      for (const n of nodesOfCluster(await api.listNodes(project, z), nameOnCloud)) {
        if (n.state !== "DELETING") found.push({ name: n.name, state: n.state });
      }
    }
    return found;
  } catch (err) {
    if (err instanceof CloudApiError) {
      ctx.report.warn(`could not check the Cloud TPU API for leftovers: ${err.message}`);
      return [];
    }
    throw err;
  }
}
