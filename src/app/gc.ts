// `tpu-deploy gc`: what tpu-deploy made that nobody owns any more. SkyPilot clusters labelled as ours
// with no state file, TPU nodes labelled as ours that are PREEMPTED or TERMINATED (they still hold
// quota), and state files whose cluster is gone and that no relaunch will bring back. Each removal
// runs under the deployment's lock, so gc never races an `up` or a `relaunch` of the same name.
import type { SkyClusterRecord } from "../adapters/sky.js";
import type { Lock } from "../adapters/state-store.js";
import { TEARDOWN_HOLD_MS } from "../core/lock.js";
import { OWNER_LABEL, ownershipOf } from "../core/ownership.js";
import { LABEL_KEY, MANAGED_BY } from "../core/plan.js";
import { type DeploymentState, overallPhase } from "../core/state.js";
import { DEFAULT_ZONES } from "../core/topology.js";
import { CloudApiError, OperationError } from "../errors.js";
import { type AppContext, sleep } from "./context.js";

const DEAD_NODE_STATES = new Set(["PREEMPTED", "TERMINATED"]);

export interface GcItem {
  kind: "cluster" | "tpu-node" | "state";
  /** Cluster name, full TPU node name, or deployment name. */
  name: string;
  /** The deployment it belonged to, when known. */
  deployment: string | null;
  why: string;
  /** A TPU node's labels (who launched it). */
  labels?: Record<string, string> | undefined;
  removed?: boolean;
  error?: string;
}

export interface Garbage {
  /** What this installation may remove. */
  found: GcItem[];
  /** What looks abandoned but another installation launched (or one from before owner labels): left alone without --force. */
  skipped: GcItem[];
}

export async function findGarbage(ctx: AppContext, opts: { force?: boolean } = {}): Promise<Garbage> {
  const me = ctx.store.installationId();
  const skipped: GcItem[] = [];
  // Ours, or not ours to remove: another installation's label, or none (made before owner labels existed).
  const mine = (labels: Record<string, string> | null | undefined, item: GcItem): boolean => {
    const o = ownershipOf(labels, me);
    if (o.kind === "ours" || opts.force) return true;
    skipped.push({
      ...item,
      why: `${item.why}; ${o.kind === "other" ? `launched by installation ${o.owner}` : `it has no ${OWNER_LABEL} label (made before owner labels)`}, not this one (${me}): --force removes it`,
    });
    return false;
  };
  const states = new Map<string, DeploymentState>();
  for (const n of ctx.store.list()) {
    const s = ctx.store.read(n);
    if (s) states.set(n, s);
  }
  const sky = await ctx.sky();
  const records = await sky.status([], { verbose: true, signal: ctx.signal });
  const byName = new Map(records.map((r) => [r.name, r]));
  const items: GcItem[] = [];

  // Every cluster some state records (replica clusters included).
  const owned = new Set([...states.values()].flatMap((s) => s.replicas.map((r) => r.cluster)));
  for (const r of records) {
    if (ours(r.labels) && !owned.has(r.name)) {
      const deployment = r.labels?.[LABEL_KEY] ?? r.name;
      const item: GcItem = {
        kind: "cluster",
        name: r.name,
        deployment,
        why: `SkyPilot cluster labelled ${MANAGED_BY.key}=${MANAGED_BY.value} (${r.status}) that no tpu-deploy state records`,
      };
      if (mine(r.labels, item)) items.push(item);
    }
  }

  for (const n of await deadNodes(ctx, [...states.values()])) {
    // A dead node of a deployment that relaunch will bring back is relaunch's to clean (it deletes
    // PREEMPTED nodes before relaunching); only what no deployment owns any more is garbage.
    const owner = n.deployment === null ? undefined : states.get(n.deployment);
    if (owner && awaitingRelaunch(owner)) continue;
    // A node of a deployment recorded here is ours whatever its labels say.
    if (owner || mine(n.labels, n)) items.push(n);
  }

  for (const [name, s] of states) {
    if (s.replicas.some((r) => byName.has(r.cluster))) continue;
    if (awaitingRelaunch(s)) continue; // a spot deployment whose clusters are gone is what relaunch brings back
    if (busy(ctx, name)) continue; // an up or relaunch is making its cluster right now
    const gaveUp = s.replicas.every((r) => r.relaunch.gaveUp);
    items.push({
      kind: "state",
      name,
      deployment: name,
      why: gaveUp
        ? `its clusters are gone and relaunch gave up (phase ${overallPhase(s)})`
        : `its clusters are gone and it is not spot, so nothing relaunches it (phase ${overallPhase(s)})`,
    });
  }
  return { found: items, skipped };
}

function awaitingRelaunch(s: DeploymentState): boolean {
  return s.config.tpu.spot && s.replicas.some((r) => !r.relaunch.gaveUp);
}

function busy(ctx: AppContext, name: string): boolean {
  try {
    ctx.store.lock(name, "tpu-deploy gc", { maxHoldMs: TEARDOWN_HOLD_MS }).release();
    return false;
  } catch (err) {
    if (err instanceof OperationError && err.code === "locked") return true;
    throw err;
  }
}

function ours(labels: Record<string, string> | null | undefined): boolean {
  return labels?.[MANAGED_BY.key] === MANAGED_BY.value;
}

/** TPU nodes labelled as ours in PREEMPTED/TERMINATED, in every zone any deployment may use. */
async function deadNodes(ctx: AppContext, states: DeploymentState[]): Promise<GcItem[]> {
  const projects = new Set<string>();
  const zones = new Set<string>();
  for (const s of states) {
    if (s.config.tpu.generation !== "v6e") continue;
    if (s.config.tpu.project) projects.add(s.config.tpu.project);
    for (const z of s.config.tpu.zones) zones.add(z);
    for (const r of s.replicas) if (r.zone) zones.add(r.zone);
  }
  if (ctx.env.GOOGLE_CLOUD_PROJECT) projects.add(ctx.env.GOOGLE_CLOUD_PROJECT);
  if (projects.size === 0) return [];
  // Nodes outlive the state that named their zones; the default zones catch those.
  for (const z of DEFAULT_ZONES.v6e) zones.add(z);
  const out: GcItem[] = [];
  try {
    const api = await ctx.tpuApi();
    for (const p of projects) {
      for (const z of zones) {
        for (const n of await api.listNodes(p, z)) {
          if (!ours(n.labels) || !DEAD_NODE_STATES.has(n.state)) continue;
          out.push({
            kind: "tpu-node",
            name: n.name,
            deployment: n.labels[LABEL_KEY] ?? null,
            labels: n.labels,
            why: `TPU node ${n.state} (${n.acceleratorType}) still holds quota`,
          });
        }
      }
    }
  } catch (err) {
    if (!(err instanceof CloudApiError)) throw err;
    ctx.report.warn(`could not list TPU nodes: ${err.message}`);
  }
  return out;
}

/** Removes each item under its deployment's lock; a busy deployment is skipped, not waited for. */
export async function removeGarbage(ctx: AppContext, items: GcItem[]): Promise<GcItem[]> {
  const done: GcItem[] = [];
  for (const item of items) {
    const owner = item.deployment ?? undefined;
    let lock: Lock | undefined;
    const dirExisted = owner ? ctx.store.exists(owner) : true;
    try {
      if (owner) lock = ctx.store.lock(owner, "tpu-deploy gc", { maxHoldMs: TEARDOWN_HOLD_MS });
      await removeOne(ctx, item);
      done.push({ ...item, removed: true });
      ctx.report.info(`removed ${item.kind} ${item.name}`);
    } catch (err) {
      const message = err instanceof OperationError && err.code === "locked" ? `skipped: ${err.message}` : (err as Error).message;
      done.push({ ...item, removed: false, error: message });
      ctx.report.warn(`${item.kind} ${item.name}: ${message}`);
    } finally {
      lock?.release();
      if (owner && !dirExisted) ctx.store.removeIfEmpty(owner);
    }
  }
  return done;
}

async function removeOne(ctx: AppContext, item: GcItem): Promise<void> {
  switch (item.kind) {
    case "cluster": {
      if (ctx.store.read(item.name)) throw new OperationError("locked", `${item.name} has a state file again (an up started meanwhile)`);
      const sky = await ctx.sky();
      await sky.down(item.name, { signal: ctx.signal, onLine: (l) => ctx.report.debug(`sky | ${l}`) });
      await verifyGone(ctx, item.name);
      return;
    }
    case "tpu-node": {
      const api = await ctx.tpuApi();
      await api.deleteNode(item.name, { signal: ctx.signal });
      return;
    }
    case "state": {
      const s = ctx.store.read(item.name);
      if (!s) return;
      const sky = await ctx.sky();
      const rec: SkyClusterRecord | undefined = (await sky.status([item.name], { signal: ctx.signal })).find((r) => r.name === item.name);
      if (rec) throw new OperationError("locked", `${item.name}'s cluster exists again (${rec.status}); kept`);
      ctx.store.remove(item.name);
      return;
    }
  }
}

async function verifyGone(ctx: AppContext, name: string): Promise<void> {
  const sky = await ctx.sky();
  for (let i = 0; i < 5; i++) {
    if (!(await sky.status([name], { signal: ctx.signal })).some((r) => r.name === name)) return;
    await sleep(1000, ctx.signal);
  }
  throw new OperationError("not_verified", `sky down ${name} did not remove the cluster`, {
    hint: `see sky status -v ${name}; sky down --purge ${name} as a last resort`,
  });
}
