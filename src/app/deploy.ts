// Executes a DeployPlan (core/plan.ts) step by step: lock → launch with zone failover → find the hosts and
// their ranks → stop what an earlier run started → prove the rendezvous ports → start every rank → wait
// until it serves. Each step records its result in the state, so a rerun continues where it stopped and
// never makes a second cluster. `up`, `restart` and `relaunch` all come through here.
import type { HostSession } from "../adapters/ssh/session.js";
import { closeSessions } from "../adapters/ssh/connection.js";
import type { Lock } from "../adapters/state-store.js";
import type { Config } from "../core/config.js";
import { formatDuration } from "../core/duration.js";
import { deployHoldMs } from "../core/lock.js";
import type { DeployPlan, ReplicaPlan } from "../core/plan.js";
import { distInitAddr as distInitAddrOf } from "../core/ranks.js";
import { addEvent, type DeploymentState, newState, resourcesKey, serverKey } from "../core/state.js";
import { OperationError, TpuDeployError, UsageError } from "../errors.js";
import { type AppContext, interruptedFrom, withSignal } from "./context.js";
import { discoverCluster, skyRecord } from "./discover.js";
import { sessionsFor } from "./hosts.js";
import { launchWithFailover } from "./launch.js";
import { checkPorts } from "./port-check.js";
import { probeRank0 } from "./probe.js";
import { waitReady } from "./readiness.js";
import { startServers, stopServers, toHostRecords } from "./start.js";
import { teardownCluster } from "./teardown.js";

export interface DeploySummary {
  name: string;
  cluster: string;
  zone: string;
  accelerator: string;
  spot: boolean;
  hosts: { rank: number; workerId: number; slice: number; internalIp: string; externalIp: string; sshHost: string }[];
  distInitAddr: string;
  endpoint: { proxy: string; public?: string };
  timings: Record<string, number>;
}

export interface DeployOptions {
  /** Tear down and launch again when the slice's resources changed (asks first, unless yes). */
  recreate?: boolean;
  yes?: boolean;
  /** Leave the cluster up when the run fails or is interrupted (for debugging). */
  keepOnFailure?: boolean;
  /** Relaunch holds the lock itself. */
  lockHeld?: boolean;
  /** The bound the caller puts on the whole run (--timeout), when it has one: sets how long the lock may be held. */
  timeoutMs?: number | undefined;
  /** Relaunch keeps the deployment's record when it tears a half-made cluster down, so the next run retries. */
  keepState?: boolean;
  /** restart: stop and start the servers even when they serve with these settings. */
  forceRestart?: boolean;
}

export async function deploy(
  ctx: AppContext,
  config: Config,
  plan: DeployPlan,
  secrets: Map<string, string>,
  opts: DeployOptions = {},
): Promise<DeploySummary> {
  const replica = plan.replicas[0];
  if (!replica) throw new OperationError("internal", "the plan has no replica");
  const lock = opts.lockHeld
    ? undefined
    : ctx.store.lock(config.name, "tpu-deploy up", { maxHoldMs: deployHoldMs(config, opts.timeoutMs) });
  if (lock) warnTakeover(ctx, config.name, lock);
  const started = Date.now();
  let sessions = new Map<string, HostSession>();
  const existing = ctx.store.read(config.name);
  let state: DeploymentState = existing ?? newState(config);
  const save = (s: DeploymentState) => {
    ctx.store.write(s);
    return s;
  };
  let launchedHere = false;
  const elapsed = () => formatDuration(Date.now() - started);
  const phase = (p: string) => ctx.report.phase(`[${elapsed()}] ${p}`);
  try {
    state = await reconcileResources(ctx, state, config, opts);
    const unchanged =
      state.phase === "serving" && serverKey(state.config) === serverKey(config) && resourcesKey(state.config) === resourcesKey(config);
    state = save({ ...state, config, spot: replica.spot, lastError: undefined });

    // 1. Launch, unless the cluster from an earlier run is up and finished its launch.
    const record = state.phase !== "launching" ? await skyRecord(ctx, replica.cluster) : undefined;
    if (record?.status === "UP" && state.zone) {
      phase(`cluster ${replica.cluster} is up in ${state.zone}: reusing it`);
      if (unchanged && !opts.forceRestart) {
        const health = await probeRank0(ctx, state.hosts, config.server.port, { generateTimeoutMs: 60_000 });
        if (health.kind === "serving") {
          phase("already serving with these settings: nothing to do");
          return summarize(config, state);
        }
      }
    } else {
      phase("provisioning");
      state = save({ ...state, phase: "launching", hosts: [] });
      launchedHere = true;
      state = await launchStep(ctx, config, plan, replica, state, save, phase);
    }

    // 2. Find the hosts and their ranks.
    phase("finding hosts");
    const found = await discoverCluster(ctx, config, state.zone);
    sessions = found.sessions;
    const hostsNow = toHostRecords(found.hosts);
    const dist = distInitAddrOf(found.hosts, config.server.distPort);
    // Keep the process groups recorded for the same hosts, so they can be stopped.
    const previous = new Map(state.hosts.map((h) => [h.sshAlias + h.externalIp, h]));
    const withOld = hostsNow.map((h) => ({
      ...h,
      pgid: previous.get(h.sshAlias + h.externalIp)?.pgid,
      startTime: previous.get(h.sshAlias + h.externalIp)?.startTime,
    }));
    state = save({ ...state, phase: "starting", nameOnCloud: found.nameOnCloud, hosts: withOld, distInitAddr: dist });
    ctx.report.info(
      `  ${found.hosts.length} host(s), worker numbers from the ${found.source === "tpu-api" ? "Cloud TPU API" : "metadata server"}; --dist-init-addr ${dist}`,
    );

    // 3. Stop what an earlier run started, then prove the rendezvous ports are open.
    await stopServers(sessions, config.name, withOld);
    const tPorts = Date.now();
    await checkPorts(ctx, sessions, hostsNow, replica.portCheck);
    if (replica.portCheck.length > 0) phase(`ports ${replica.portCheck.join(", ")} open between hosts`);

    // 4. Start every rank.
    phase("starting ranks");
    const tStart = Date.now();
    const startedHosts = await startServers(ctx, sessions, config, replica, hostsNow, secrets);
    state = save(
      addEvent(
        { ...state, hosts: startedHosts, timings: { ...state.timings, portsMs: tStart - tPorts } },
        { event: "servers-started" },
        ctx.now(),
      ),
    );

    // 5. Wait until it serves.
    const apiKey = config.server.apiKeySecret ? secrets.get(config.server.apiKeySecret) : undefined;
    const ready = await waitReady(ctx, sessions, config, startedHosts, {
      timeoutMs: config.server.readyTimeoutMs,
      apiKey,
      onPhase: (p) =>
        phase(
          p === "rendezvous" ? "rendezvous" : p === "loading" ? "loading/compiling" : p === "warmup" ? "warming up (/health answers)" : p,
        ),
    });
    const timings = {
      ...state.timings,
      readyMs: Date.now() - tStart,
      totalMs: Date.now() - started,
      ...Object.fromEntries(Object.entries(ready.phases).map(([k, v]) => [`phase.${k}Ms`, v])),
    };
    state = save(
      addEvent(
        {
          ...state,
          phase: "serving",
          servingSince: ctx.now().toISOString(),
          timings,
          relaunch: { ...state.relaunch, attempts: 0, nextAttemptAt: undefined, gaveUp: false },
        },
        { event: "serving", zone: state.zone, durationMs: Date.now() - started },
        ctx.now(),
      ),
    );
    return summarize(config, state);
  } catch (err) {
    const interrupted = ctx.signal.aborted;
    const e = interrupted && !(err instanceof TpuDeployError && err.code !== "interrupted") ? interruptedFrom(ctx.signal) : err;
    await onFailure(ctx, config, state, sessions, e, {
      launchedHere,
      keepOnFailure: Boolean(opts.keepOnFailure),
      interrupted,
      keepState: Boolean(opts.keepState) || existing !== undefined,
      newRecord: existing === undefined,
    });
    throw e;
  } finally {
    await closeSessions([...sessions.values()]);
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

/** A rerun with other resources needs a new cluster: only with --recreate, after asking. */
async function reconcileResources(ctx: AppContext, state: DeploymentState, config: Config, opts: DeployOptions): Promise<DeploymentState> {
  if (state.hosts.length === 0 && state.phase === "launching") return state;
  if (resourcesKey(state.config) === resourcesKey(config)) {
    if (serverKey(state.config) !== serverKey(config)) ctx.report.info("model or server settings changed: restarting the servers only");
    return state;
  }
  const was = `${state.config.topology.slices} x ${state.config.tpu.accelerator}`;
  if (!opts.recreate) {
    throw new UsageError(`${config.name} exists with other resources (${was}); this needs a new cluster`, {
      hint: `run again with --recreate to tear it down and launch the new one, or tpu-deploy down ${config.name} first`,
    });
  }
  await ctx.prompt.confirm(
    `Tear down ${config.name} (${was}) to launch ${config.topology.slices} x ${config.tpu.accelerator}?`,
    Boolean(opts.yes),
  );
  ctx.report.phase("recreating: tearing down the old cluster");
  await stopQuietly(ctx, state);
  await teardownCluster(ctx, clusterRefOf(state), { leftovers: "all" });
  return newState(config);
}

export function clusterRefOf(state: DeploymentState): Parameters<typeof teardownCluster>[1] {
  return {
    name: state.name,
    generation: state.config.tpu.generation,
    project: state.config.tpu.project,
    zones: state.zone ? [state.zone] : state.config.tpu.zones,
    nameOnCloud: state.nameOnCloud,
  };
}

async function launchStep(
  ctx: AppContext,
  config: Config,
  plan: DeployPlan,
  replica: ReplicaPlan,
  state: DeploymentState,
  save: (s: DeploymentState) => DeploymentState,
  phase: (p: string) => void,
): Promise<DeploymentState> {
  const t0 = Date.now();
  const what = `${config.name} (${config.topology.slices} x ${config.tpu.accelerator}${replica.spot ? ", spot" : ""})`;
  const { result, state: s2 } = await launchWithFailover(
    ctx,
    {
      replica,
      blocked: state.relaunch.blocked,
      launchTimeoutMs: config.launch.timeoutMs,
      what,
      templateName: plan.template,
      multiSlice: config.topology.slices > 1,
      onSetup: (zone) => phase(`setup: installing sglang-jax ${config.sglang.ref} on every host (${zone})`),
    },
    state,
    save,
  );
  state = save({ ...s2, relaunch: { ...s2.relaunch, blocked: result.blocked } });
  if (!result.ok) {
    const tried = result.attempts.map((a) => `${a.zone}: ${a.outcome}${a.message ? ` (${a.message.split("\n")[0]})` : ""}`).join("\n  ");
    throw new OperationError(
      result.kind,
      `no zone could provide ${config.topology.slices} x ${config.tpu.accelerator}${replica.spot ? " (spot)" : ""}:\n  ${tried}`,
      {
        hint:
          result.kind === "quota"
            ? "request more TPU quota for the region, or add zones in other regions (--zone)"
            : "add zones (--zone, tried in order), try on-demand, or retry later",
      },
    );
  }
  return save({
    ...state,
    phase: "launched",
    zone: result.zone,
    launchedAt: ctx.now().toISOString(),
    timings: { ...state.timings, launchMs: Date.now() - t0 },
  });
}

async function onFailure(
  ctx: AppContext,
  config: Config,
  state: DeploymentState,
  sessions: Map<string, HostSession>,
  err: unknown,
  how: { launchedHere: boolean; keepOnFailure: boolean; interrupted: boolean; keepState: boolean; newRecord: boolean },
): Promise<void> {
  const e = err instanceof TpuDeployError ? err : undefined;
  const code = e?.code ?? "internal";
  // Cleanup must run even though the run's signal is aborted: use a fresh one.
  const cleanup = withSignal(ctx, new AbortController().signal);
  if (code === "usage" || code === "config_invalid" || code === "locked") return;
  try {
    if (state.hosts.some((h) => h.pgid) && sessions.size > 0) {
      ctx.report.info("stopping the servers started by this run");
      await stopServers(sessions, config.name, state.hosts, 5).catch(() => undefined);
      state = { ...state, hosts: state.hosts.map((h) => ({ ...h, pgid: undefined, startTime: undefined })) };
    }
    const tearDown = how.interrupted && how.launchedHere && !how.keepOnFailure;
    if (tearDown) {
      ctx.report.info(`tearing down ${config.name} (interrupted while launching; --keep-on-failure keeps it)`);
      await teardownCluster(cleanup, clusterRefOf(state), { leftovers: "all" });
      state = { ...state, hosts: [], phase: "launching" };
      if (!how.keepState) {
        ctx.store.remove(config.name);
        return;
      }
    }
    // Nothing exists for these: every zone's half-made cluster was already removed, or sky never started.
    const nothingLaunched =
      code === "capacity" || code === "quota" || ((code === "sky_not_found" || code === "invalid_task") && how.newRecord);
    if (nothingLaunched && !how.keepState) {
      ctx.store.remove(config.name);
      return;
    }
  } catch (cleanupErr) {
    ctx.report.warn(`cleanup failed: ${(cleanupErr as Error).message}; check with tpu-deploy status ${config.name}`);
  }
  const failed: DeploymentState = addEvent(
    {
      ...state,
      phase: state.phase === "launching" && !how.interrupted ? "launching" : "failed",
      lastError: { code, message: (e?.message ?? String(err)).slice(0, 2000) },
    },
    { event: how.interrupted ? "interrupted" : "failed", detail: code },
    ctx.now(),
  );
  ctx.store.write(failed);
}

/** Before --recreate tears a cluster down: stop its servers on whichever hosts still answer. */
async function stopQuietly(ctx: AppContext, state: DeploymentState): Promise<void> {
  if (state.hosts.length === 0) return;
  const hs = await sessionsFor(ctx, state.hosts, 15_000);
  try {
    const reachable = state.hosts.filter((h) => hs.sessions.has(h.sshAlias));
    await stopServers(hs.sessions, state.name, reachable, 5).catch(() => undefined);
  } finally {
    await hs.close();
  }
}

export function summarize(config: Config, state: DeploymentState): DeploySummary {
  const head = state.hosts.find((h) => h.rank === 0);
  return {
    name: config.name,
    cluster: state.nameOnCloud ?? config.name,
    zone: state.zone ?? "",
    accelerator: config.tpu.accelerator,
    spot: state.spot,
    hosts: state.hosts.map((h) => ({
      rank: h.rank,
      workerId: h.workerId,
      slice: h.slice,
      internalIp: h.internalIp,
      externalIp: h.externalIp,
      sshHost: h.sshAlias,
    })),
    distInitAddr: state.distInitAddr ?? "",
    endpoint: {
      proxy: `tpu-deploy proxy ${config.name}`,
      ...(config.server.public && head ? { public: `http://${head.externalIp}:${config.server.port}` } : {}),
    },
    timings: state.timings,
  };
}
