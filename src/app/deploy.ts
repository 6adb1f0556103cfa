// Executes a DeployPlan (core/plan.ts): under the deployment's lock, every planned replica in parallel
// (bounded), each through app/deploy-replica.ts. The deployment serves when every replica serves; one
// replica failing leaves the others serving and is a partial failure naming it. `up`, `restart` and
// `relaunch` all come through here.
import { specOf } from "../core/config.js";
import type { Config } from "../core/config.js";
import { deployHoldMs } from "../core/lock.js";
import type { DeployPlan } from "../core/plan.js";
import type { Lock } from "../adapters/state-store.js";
import { clusterName, type DeploymentState, newReplica, newState, type ReplicaState, resourcesKey, serverKey } from "../core/state.js";
import { OperationError, PartialFailureError, type TpuDeployError, toTpuDeployError, UsageError } from "../errors.js";
import { type AppContext, settleEach } from "./context.js";
import { assertOwned } from "./ownership.js";
import { deployReplica, type ReplicaOutcome } from "./deploy-replica.js";
import { sessionsFor } from "./hosts.js";
import { stopServers } from "./start.js";
import { StateHolder } from "./state-holder.js";
import { teardownCluster } from "./teardown.js";

export interface ReplicaSummary {
  replica: number;
  cluster: string;
  zone: string;
  spot: boolean;
  /** serving; or starting, when up --min-ready returned before it served. */
  phase: string;
  hosts: { rank: number; workerId: number; internalIp: string; externalIp: string; sshHost: string }[];
  distInitAddr: string;
  timings: Record<string, number>;
}

export interface DeploySummary {
  name: string;
  layout: string;
  accelerator: string;
  replicas: ReplicaSummary[];
  serving: number;
  endpoint: { proxy: string; public?: string[] };
  // Replica 0's, at the top as before replicas: what a single-replica deployment reports.
  cluster: string;
  zone: string;
  spot: boolean;
  hosts: ReplicaSummary["hosts"];
  distInitAddr: string;
  timings: Record<string, number>;
}

export interface DeployOptions {
  /** Tear down and launch again when the slice's resources changed (asks first, unless yes). */
  recreate?: boolean;
  yes?: boolean;
  /** Leave the cluster up when the run fails or is interrupted (for debugging). */
  keepOnFailure?: boolean;
  /** Tear a slice down when interrupted after its launch (default: keep it and say how to continue). */
  downOnInterrupt?: boolean;
  /** Relaunch holds the lock itself. */
  lockHeld?: boolean;
  /** Act on clusters another tpu-deploy installation launched (their owner label). */
  force?: boolean | undefined;
  /** The bound the caller puts on the whole run (--timeout), when it has one: sets how long the lock may be held. */
  timeoutMs?: number | undefined;
  /** Relaunch keeps the deployment's record when a first launch fails, so the next run retries. */
  keepState?: boolean;
  /** restart: stop and start the servers even when they serve with these settings. */
  forceRestart?: boolean;
  /** Return once this many replicas serve (the others' servers keep loading; status shows them). */
  minReady?: number | undefined;
}

/** Replicas launched at once: each runs sky launch, SSH fan-out and a readiness wait. */
const REPLICA_CONCURRENCY = 4;

export async function deploy(
  ctx: AppContext,
  config: Config,
  plan: DeployPlan,
  secrets: Map<string, string>,
  opts: DeployOptions = {},
): Promise<DeploySummary> {
  const lock = opts.lockHeld
    ? undefined
    : ctx.store.lock(config.name, "tpu-deploy up", { maxHoldMs: deployHoldMs(config, opts.timeoutMs) });
  if (lock) warnTakeover(ctx, config.name, lock);
  if (!opts.lockHeld) {
    // Relaunch (which holds the lock) checks ownership itself before it acts.
    try {
      await assertOwned(
        ctx,
        config.name,
        plan.replicas.map((r) => r.cluster),
        { force: opts.force, doing: "take it over" },
      );
      ctx.store.installationId({ create: true });
    } catch (err) {
      lock?.release();
      throw err;
    }
  }
  const existing = ctx.store.read(config.name);
  try {
    const previous = existing?.config;
    let state = existing ?? newState(config, specOf(config));
    state = await reconcile(ctx, state, config, plan, opts);
    const holder = new StateHolder({ ...state, spec: specOf(config), config, lastError: undefined }, ctx.store, ctx.now);
    holder.set(holder.get());
    if (config.replicas > 1) ctx.report.info(`${config.name}: ${config.topology.layout}`);

    const minReady = Math.min(opts.minReady ?? plan.replicas.length, plan.replicas.length);
    const readyAbort = new AbortController();
    let serving = 0;
    let started = 0;
    const checkEnough = () => {
      if (serving >= minReady && started >= plan.replicas.length) readyAbort.abort();
    };
    const clean = new Set<number>();
    const results = await settleEach(plan.replicas, REPLICA_CONCURRENCY, async (replica) => {
      const outcome: ReplicaOutcome = await deployReplica(ctx, {
        config,
        replica,
        templateName: plan.template,
        secrets,
        holder,
        previous,
        forceRestart: Boolean(opts.forceRestart),
        downOnInterrupt: Boolean(opts.downOnInterrupt),
        keepOnFailure: Boolean(opts.keepOnFailure),
        onLeftNothing: () => clean.add(replica.replica),
        onStarted: () => {
          started++;
          checkEnough();
        },
        ...(minReady < plan.replicas.length ? { readySignal: readyAbort.signal } : {}),
      });
      if (outcome !== "starting") serving++;
      checkEnough();
      return outcome;
    });
    const failures = results.flatMap((r, i) =>
      r.status === "rejected" ? [{ replica: plan.replicas[i]?.replica ?? i, error: toTpuDeployError(r.reason) }] : [],
    );
    if (failures.length === 0) return summarize(config, holder.get());
    return failed(ctx, config, holder, failures, { existing, keepState: Boolean(opts.keepState), planned: plan.replicas.length, clean });
  } finally {
    lock?.release();
  }
}

/** Says whose stale lock was taken over, and why it counted as stale. */
export function warnTakeover(ctx: AppContext, name: string, lock: Lock): void {
  const from = lock.tookOverFrom;
  if (!from) return;
  ctx.report.warn(
    `took over the lock of ${name} from pid ${from.pid} (${from.command}): ${lock.tookOverBecause ?? "it is no longer running"}`,
  );
}

/**
 * Before any replica runs: changed resources need --recreate (asking first), a lower replica count removes
 * the replicas beyond it (asking first), and every planned replica gets its record.
 */
async function reconcile(
  ctx: AppContext,
  state: DeploymentState,
  config: Config,
  plan: DeployPlan,
  opts: DeployOptions,
): Promise<DeploymentState> {
  const made = state.replicas.filter((r) => r.hosts.length > 0 || r.phase !== "launching");
  const legacy = state.replicas.find((r) => r.legacyLayout);
  if (made.length > 0 && (legacy || resourcesKey(state.config) !== resourcesKey(config))) {
    const was = legacy?.legacyLayout ?? `${state.replicas.length} x ${state.config.tpu.accelerator}`;
    if (!opts.recreate) {
      throw new UsageError(`${config.name} exists with other resources (${was}); this needs new clusters`, {
        hint: `run again with --recreate to tear it down and launch ${config.topology.layout}, or tpu-deploy down ${config.name} first`,
      });
    }
    await ctx.prompt.confirm(`Tear down ${config.name} (${was}) to launch ${config.topology.layout}?`, Boolean(opts.yes));
    ctx.report.phase("recreating: tearing down the old clusters");
    for (const r of state.replicas) await removeReplica(ctx, state, r);
    return newState(config, specOf(config));
  }
  if (made.length > 0 && serverKey(state.config) !== serverKey(config))
    ctx.report.info("model or server settings changed: restarting the servers only");
  const extra = state.replicas.filter((r) => r.replica >= config.replicas);
  if (extra.length > 0) {
    await ctx.prompt.confirm(
      `Remove ${extra.map((r) => r.cluster).join(", ")} (down to ${config.replicas} replica(s))?`,
      Boolean(opts.yes),
    );
    for (const r of extra) await removeReplica(ctx, state, r);
  }
  const kept = state.replicas.filter((r) => r.replica < config.replicas);
  const missing = plan.replicas
    .filter((p) => !kept.some((r) => r.replica === p.replica))
    .map((p) => newReplica(config.name, p.replica, p.spot));
  return { ...state, replicas: [...kept, ...missing].sort((a, b) => a.replica - b.replica) };
}

async function removeReplica(ctx: AppContext, state: DeploymentState, r: ReplicaState): Promise<void> {
  await stopQuietly(ctx, state.name, r);
  await teardownCluster(ctx, clusterRefOf(state, r), { leftovers: "all" });
}

export function clusterRefOf(state: DeploymentState, r: ReplicaState): Parameters<typeof teardownCluster>[1] {
  return {
    name: r.cluster,
    generation: state.config.tpu.generation,
    project: state.config.tpu.project,
    zones: r.zone ? [r.zone] : state.config.tpu.zones,
    nameOnCloud: r.nameOnCloud,
  };
}

/**
 * Before a replica's cluster is torn down: stop its servers on whichever hosts still answer. A host whose
 * key changed is left alone (nothing is stopped there); the teardown removes it anyway.
 */
export async function stopQuietly(ctx: AppContext, name: string, r: ReplicaState): Promise<void> {
  if (r.hosts.length === 0) return;
  const hs = await sessionsFor(ctx, name, r.hosts, { timeoutMs: 15_000, onHostKeyChanged: "skip" });
  try {
    const reachable = r.hosts.filter((h) => hs.sessions.has(h.sshAlias));
    await stopServers(hs.sessions, name, reachable, 5).catch(() => undefined);
  } finally {
    await hs.close();
  }
}

function failed(
  ctx: AppContext,
  config: Config,
  holder: StateHolder,
  failures: { replica: number; error: TpuDeployError }[],
  how: { existing: DeploymentState | undefined; keepState: boolean; planned: number; clean: ReadonlySet<number> },
): never {
  const first = failures[0]?.error ?? new OperationError("internal", "no failure recorded");
  const state = holder.get();
  // A first up that left nothing anywhere (no capacity, sky missing, task rejected, or torn down and verified
  // gone after an interrupt) leaves no record.
  const nothing = new Set(["capacity", "quota", "sky_not_found", "invalid_task"]);
  const untouched = state.replicas.every((r) => r.hosts.length === 0 && !r.nameOnCloud && r.phase !== "serving");
  const leftNothing = (f: { replica: number; error: TpuDeployError }) => nothing.has(f.error.code) || how.clean.has(f.replica);
  if (!how.existing && !how.keepState && untouched && failures.length === how.planned && failures.every(leftNothing)) {
    ctx.store.remove(config.name);
    throw first;
  }
  holder.update((s) => ({ ...s, lastError: { code: first.code, message: first.message.slice(0, 2000) } }));
  if (failures.length === how.planned || failures.some((f) => f.error.code === "interrupted")) {
    throw failures.find((f) => f.error.code === "interrupted")?.error ?? first;
  }
  const ok = state.replicas.filter((r) => !failures.some((f) => f.replica === r.replica)).map((r) => r.cluster);
  throw new PartialFailureError(
    `${failures.length} of ${how.planned} replicas failed (${ok.join(", ")} ${ok.length === 1 ? "serves" : "serve"}):\n  ${failures
      .map(
        (f) =>
          `replica ${f.replica} (${clusterName(config.name, f.replica)}): ${f.error.code}: ${f.error.message.split("\n").join("\n    ")}`,
      )
      .join("\n  ")}`,
    failures.map((f) => ({ target: clusterName(config.name, f.replica), ok: false, message: f.error.message })),
    {
      hint: `tpu-deploy up ${config.name} again continues only what is missing; tpu-deploy status ${config.name} shows each replica`,
      cause: first,
    },
  );
}

export function summarize(config: Config, state: DeploymentState): DeploySummary {
  const replicas: ReplicaSummary[] = state.replicas.map((r) => ({
    replica: r.replica,
    cluster: r.cluster,
    zone: r.zone ?? "",
    spot: r.spot,
    phase: r.phase,
    hosts: r.hosts.map((h) => ({
      rank: h.rank,
      workerId: h.workerId,
      internalIp: h.internalIp,
      externalIp: h.externalIp,
      sshHost: h.sshAlias,
    })),
    distInitAddr: r.distInitAddr ?? "",
    timings: r.timings,
  }));
  const first = replicas[0];
  const publicUrls = config.server.public
    ? state.replicas.flatMap((r) => r.hosts.filter((h) => h.rank === 0).map((h) => `http://${h.externalIp}:${config.server.port}`))
    : [];
  return {
    name: config.name,
    layout: config.topology.layout,
    accelerator: config.tpu.accelerator,
    replicas,
    serving: replicas.filter((r) => r.phase === "serving").length,
    endpoint: { proxy: `tpu-deploy proxy ${config.name}`, ...(publicUrls.length > 0 ? { public: publicUrls } : {}) },
    cluster: state.replicas[0]?.nameOnCloud ?? config.name,
    zone: first?.zone ?? "",
    spot: first?.spot ?? config.tpu.spot,
    hosts: first?.hosts ?? [],
    distInitAddr: first?.distInitAddr ?? "",
    timings: first?.timings ?? {},
  };
}
