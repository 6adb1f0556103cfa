// Tearing a cluster down and proving it is gone. `sky down` exits 0 even when it failed
// (docs/upstream/skypilot.md §3), so the result is what `sky status` and, where it serves the slice, the
// Cloud TPU API say afterwards. What could not be checked is reported as such, never as verified.
import { nodesOfCluster } from "../adapters/tpu-api.js";
import { CloudApiError, OperationError } from "../errors.js";
import { type AppContext, sleep } from "./context.js";

/** A SkyPilot cluster of ours and where its TPU nodes may be. */
export interface ClusterRef {
  name: string;
  generation: string;
  project: string | undefined;
  /** Zones its TPU nodes may be in (the recorded zone, or every configured zone). */
  zones: string[];
  nameOnCloud?: string | undefined;
}

export interface TeardownResult {
  existed: boolean;
  /** What was checked after `sky down`, in words: shown to the user as is. */
  checked: string[];
  /** Checks that could not run (the cloud's state is then unknown). */
  unchecked: string[];
  /** Checks that do not apply (TPU7x is not in the Cloud TPU API), said so the message claims nothing more. */
  notApplicable: string[];
}

/**
 * Which leftover TPU nodes labelled as the cluster's may be deleted: `down` deletes what the user asked to
 * remove; every automatic cleanup only nodes that are already dead (never a READY one).
 */
export type LeftoverPolicy = "all" | "dead-only";
const DEAD_NODE_STATES = new Set(["PREEMPTED", "TERMINATED"]);

export async function teardownCluster(
  ctx: AppContext,
  ref: ClusterRef,
  opts: { quiet?: boolean; leftovers?: LeftoverPolicy } = {},
): Promise<TeardownResult> {
  const sky = await ctx.sky();
  const before = (await sky.status([ref.name], { verbose: true })).find((r) => r.name === ref.name);
  const nameOnCloud = before?.cluster_name_on_cloud ?? ref.nameOnCloud;
  if (before) {
    if (!opts.quiet) ctx.report.info(`sky down ${ref.name}`);
    const r = await sky.down(ref.name, { onLine: (l) => ctx.report.debug(`sky | ${l}`) });
    ctx.report.debug(`sky down exited ${r.exitCode}`);
  }
  // The record must be gone (a few tries: the API server may lag a moment).
  let gone = false;
  for (let i = 0; i < 5 && !gone; i++) {
    gone = !(await sky.status([ref.name])).some((r) => r.name === ref.name);
    if (!gone) await sleep(1000);
  }
  if (!gone) {
    throw new OperationError("not_verified", `sky down ${ref.name} did not remove the cluster (it is still in sky status)`, {
      hint: `see \`sky status -v ${ref.name}\`, then \`sky down ${ref.name}\`; as a last resort \`sky down --purge ${ref.name}\` and check the console`,
    });
  }
  const checked = ["gone from sky status"];
  const unchecked: string[] = [];
  const existed = Boolean(before);
  if (ref.generation !== "v6e") {
    const notApplicable = ["the Cloud TPU API does not serve TPU7x (its VMs are Compute Engine instances of SkyPilot's MIG)"];
    return { existed, checked, unchecked, notApplicable };
  }
  if (!ref.project) {
    unchecked.push("the Cloud TPU API: no project (set tpu.project or GOOGLE_CLOUD_PROJECT)");
    return { existed, checked, unchecked, notApplicable: [] };
  }
  if (!nameOnCloud) {
    // Never launched far enough to have a name on the cloud: there is nothing to look for.
    if (!existed) return { existed, checked, unchecked, notApplicable: ["no TPU node was ever created (no name on the cloud)"] };
    unchecked.push("the Cloud TPU API: the cluster's name on the cloud is unknown");
    return { existed, checked, unchecked, notApplicable: [] };
  }
  try {
    let left = await leftoverTpuNodes(ctx, ref.project, ref.zones, nameOnCloud);
    const deletable = left.filter((n) => (opts.leftovers ?? "dead-only") === "all" || DEAD_NODE_STATES.has(n.state));
    if (deletable.length > 0) {
      // Nodes labelled as this cluster's outlive `sky down` (e.g. PREEMPTED ones SkyPilot already forgot): ours to delete.
      const api = await ctx.tpuApi();
      for (const n of deletable) {
        ctx.report.info(`deleting leftover TPU node ${n.name} (${n.state})`);
        await api.deleteNode(n.name, { signal: ctx.signal });
      }
      left = await leftoverTpuNodes(ctx, ref.project, ref.zones, nameOnCloud);
    }
    if (left.length > 0) {
      const names = left.map((n) => `${n.name} (${n.state})`).join(", ");
      throw new OperationError("not_verified", `TPU nodes of ${ref.name} still exist after sky down: ${names}`, {
        hint: "they hold quota and may bill: delete them in the console, or run tpu-deploy gc -y",
      });
    }
    checked.push(`no TPU node left in the Cloud TPU API (${ref.zones.join(", ")})`);
  } catch (err) {
    if (!(err instanceof CloudApiError)) throw err;
    unchecked.push(`the Cloud TPU API: ${err.message.split("\n")[0]}`);
  }
  return { existed, checked, unchecked, notApplicable: [] };
}

/** TPU nodes still labelled as the cluster's, except those already being deleted. */
async function leftoverTpuNodes(
  ctx: AppContext,
  project: string,
  zones: string[],
  nameOnCloud: string,
): Promise<{ name: string; state: string }[]> {
  const api = await ctx.tpuApi();
  const found: { name: string; state: string }[] = [];
  for (const z of zones) {
    for (const n of nodesOfCluster(await api.listNodes(project, z), nameOnCloud)) {
      if (n.state !== "DELETING") found.push({ name: n.name, state: n.state });
    }
  }
  return found;
}
