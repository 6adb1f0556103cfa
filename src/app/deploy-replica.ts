// One replica of a DeployPlan, step by step: launch with zone failover (unless its cluster is up from an
// earlier run) → find the hosts and their ranks → stop what an earlier run started → prove the rendezvous
// ports → start every rank → wait until it serves. Each step records its result in the replica's state, so a
// rerun continues where it stopped and never makes a second cluster.
import { closeSessions } from "../adapters/ssh/connection.js";
import type { HostSession } from "../adapters/ssh/session.js";
import type { Config } from "../core/config.js";
import { formatDuration } from "../core/duration.js";
import type { ReplicaPlan } from "../core/plan.js";
import { distInitAddr as distInitAddrOf } from "../core/ranks.js";
import { type ReplicaState, serverKey } from "../core/state.js";
import { OperationError, TpuDeployError } from "../errors.js";
import { type AppContext, interruptedFrom, withSignal } from "./context.js";
import { discoverCluster, skyRecord } from "./discover.js";
import { firstUseNotice, isHostKeyChange } from "./host-keys.js";
import { launchWithFailover } from "./launch.js";
import { checkPorts, LIBTPU_PORT } from "./port-check.js";
import { probeRank0 } from "./probe.js";
import { waitReady } from "./readiness.js";
import { startServers, stopServers, toHostRecords } from "./start.js";
import type { StateHolder } from "./state-holder.js";
import { teardownCluster } from "./teardown.js";

export interface ReplicaRun {
  config: Config;
  replica: ReplicaPlan;
  templateName: string;
  secrets: Map<string, string>;
  holder: StateHolder;
  /** The recorded config of an earlier run, to tell whether it serves with these settings. */
  previous: Config | undefined;
  forceRestart: boolean;
  /** Called when a failed run left nothing of this replica in the cloud (torn down and verified gone). */
  onLeftNothing?: () => void;
  /** Tear the slice down when interrupted after its launch finished (the old rule; default: keep it). */
  downOnInterrupt: boolean;
  keepOnFailure: boolean;
  /** Called once this replica's servers are started (up --min-ready waits for that, not for serving). */
  onStarted?: () => void;
  /** Aborts only the wait for this replica to serve (--min-ready reached). */
  readySignal?: AbortSignal;
}

export type ReplicaOutcome = "serving" | "already-serving" | "starting";

export async function deployReplica(ctx: AppContext, run: ReplicaRun): Promise<ReplicaOutcome> {
  const { config, replica, holder } = run;
  const i = replica.replica;
  const started = Date.now();
  const tag = config.replicas > 1 ? `replica ${i}: ` : "";
  const phase = (p: string) => ctx.report.phase(`[${formatDuration(Date.now() - started)}] ${tag}${p}`);
  const rep = () => holder.replica(i);
  const save = (fn: (r: ReplicaState) => ReplicaState) => holder.updateReplica(i, fn);
  let sessions = new Map<string, HostSession>();
  let launchInFlight = false;
  let startedHere = false;
  try {
    // 1. Launch, unless the cluster from an earlier run is up and finished its launch.
    const record = rep().phase !== "launching" ? await skyRecord(ctx, replica.cluster) : undefined;
    if (record?.status === "UP" && rep().zone) {
      phase(`cluster ${replica.cluster} is up in ${rep().zone}: reusing it`);
      const unchanged = rep().phase === "serving" && run.previous !== undefined && serverKey(run.previous) === serverKey(config);
      if (unchanged && !run.forceRestart) {
        const health = await probeRank0(ctx, config.name, rep().hosts, config.server.port, { generateTimeoutMs: 60_000 });
        if (health.kind === "serving") {
          phase("already serving with these settings: nothing to do");
          run.onStarted?.();
          return "already-serving";
        }
      }
    } else {
      phase("provisioning");
      save((r) => ({ ...r, phase: "launching", hosts: [], spot: replica.spot }));
      launchInFlight = true;
      await launchStep(ctx, run, phase);
      launchInFlight = false;
    }

    // 2. Find the hosts and their ranks.
    phase("finding hosts");
    const found = await discoverCluster(ctx, config, replica.cluster, rep().zone, rep().hosts);
    sessions = found.sessions;
    const hostsNow = toHostRecords(found.hosts);
    const dist = distInitAddrOf(found.hosts, config.server.distPort);
    // Keep the process groups recorded for the same hosts, so they can be stopped.
    const previous = new Map(rep().hosts.map((h) => [h.sshAlias + h.externalIp, h]));
    const withOld = hostsNow.map((h) => ({
      ...h,
      pgid: previous.get(h.sshAlias + h.externalIp)?.pgid,
      startTime: previous.get(h.sshAlias + h.externalIp)?.startTime,
    }));
    save((r) => ({ ...r, phase: "starting", nameOnCloud: found.nameOnCloud, hosts: withOld, distInitAddr: dist }));
    if (found.firstUse.length > 0) holder.event({ event: "host-keys-first-use", replica: i, detail: firstUseNotice(found.firstUse) });
    const checked = found.hosts.every((h) => h.hostKeysFrom === "tpu-api") ? ", host keys checked against it" : "";
    ctx.report.info(
      `  ${tag}${found.hosts.length} host(s), worker numbers from the ${found.source === "tpu-api" ? `Cloud TPU API${checked}` : "metadata server"}${found.hosts.length > 1 ? `; --dist-init-addr ${dist}` : ""}`,
    );

    // 3. Stop what an earlier run started, then prove the rendezvous ports are open.
    await stopServers(sessions, config.name, withOld);
    const tPorts = Date.now();
    await checkPorts(ctx, sessions, hostsNow, replica.portCheck);
    if (replica.portCheck.length > 0 && hostsNow.length > 1)
      phase(`ports ${replica.portCheck.join(", ")} and ${LIBTPU_PORT} open between hosts`);

    // 4. Start every rank.
    phase("starting ranks");
    const tStart = Date.now();
    const startedHosts = await startServers(ctx, sessions, config, replica, hostsNow, run.secrets);
    startedHere = true;
    save((r) => ({ ...r, hosts: startedHosts, timings: { ...r.timings, portsMs: tStart - tPorts } }));
    holder.event({ event: "servers-started", replica: i });
    run.onStarted?.();

    // 5. Wait until it serves (or until up --min-ready has what it needs: the servers keep loading).
    const apiKey = config.server.apiKeySecret ? run.secrets.get(config.server.apiKeySecret) : undefined;
    const waitCtx = run.readySignal ? withSignal(ctx, AbortSignal.any([ctx.signal, run.readySignal])) : ctx;
    try {
      const ready = await waitReady(waitCtx, sessions, config, startedHosts, {
        timeoutMs: config.server.readyTimeoutMs,
        apiKey,
        onPhase: (p) =>
          phase(
            p === "rendezvous" ? "rendezvous" : p === "loading" ? "loading/compiling" : p === "warmup" ? "warming up (/health answers)" : p,
          ),
      });
      save((r) => ({
        ...r,
        phase: "serving",
        servingSince: ctx.now().toISOString(),
        lastError: undefined,
        timings: {
          ...r.timings,
          readyMs: Date.now() - tStart,
          totalMs: Date.now() - started,
          ...Object.fromEntries(Object.entries(ready.phases).map(([k, v]) => [`phase.${k}Ms`, v])),
        },
        relaunch: { ...r.relaunch, attempts: 0, nextAttemptAt: undefined, gaveUp: false },
      }));
      holder.event({ event: "serving", replica: i, zone: rep().zone, durationMs: Date.now() - started });
      return "serving";
    } catch (err) {
      if (run.readySignal?.aborted && !ctx.signal.aborted) return "starting";
      throw err;
    }
  } catch (err) {
    const interrupted = ctx.signal.aborted;
    const e = interrupted && !(err instanceof TpuDeployError && err.code !== "interrupted") ? interruptedFrom(ctx.signal) : err;
    await onFailure(ctx, run, sessions, e, { launchInFlight, startedHere, interrupted });
    throw e;
  } finally {
    await closeSessions([...sessions.values()]);
  }
}

async function launchStep(ctx: AppContext, run: ReplicaRun, phase: (p: string) => void): Promise<void> {
  const { config, replica, holder } = run;
  const i = replica.replica;
  const t0 = Date.now();
  const what = `${replica.cluster} (${config.tpu.accelerator}${replica.spot ? ", spot" : ""})`;
  const result = await launchWithFailover(ctx, {
    replica,
    deployment: config.name,
    generation: config.tpu.generation,
    project: config.tpu.project,
    blocked: holder.replica(i).relaunch.blocked,
    launchTimeoutMs: config.launch.timeoutMs,
    what,
    templateName: run.templateName,
    onSetup: (zone) => phase(`setup: installing sglang-jax ${config.sglang.ref} on every host (${zone})`),
    onEvent: (event, zone, detail) => holder.event({ event, replica: i, zone, detail }),
    onZone: (zone) => holder.updateReplica(i, (r) => ({ ...r, zone })),
  });
  holder.updateReplica(i, (r) => ({ ...r, relaunch: { ...r.relaunch, blocked: result.blocked } }));
  if (!result.ok) {
    const tried = result.attempts.map((a) => `${a.zone}: ${a.outcome}${a.message ? ` (${a.message.split("\n")[0]})` : ""}`).join("\n  ");
    throw new OperationError(
      result.kind,
      `no zone could provide ${config.tpu.accelerator}${replica.spot ? " (spot)" : ""} for ${replica.cluster}:\n  ${tried}`,
      {
        hint:
          result.kind === "quota"
            ? "request more TPU quota for the region, or add zones in other regions (--zone)"
            : "add zones (--zone, tried in order), try on-demand, or retry later",
      },
    );
  }
  holder.updateReplica(i, (r) => ({
    ...r,
    phase: "launched",
    zone: result.zone,
    launchedAt: ctx.now().toISOString(),
    timings: { ...r.timings, launchMs: Date.now() - t0 },
  }));
}

/**
 * After a failure or an interrupt: stop the servers this run started; tear the slice down only when the
 * launch itself was in flight (a half-made cluster nobody would use) — after that the slice is kept, since
 * it may have taken a long time to get, and the message says how to continue or remove it.
 */
async function onFailure(
  ctx: AppContext,
  run: ReplicaRun,
  sessions: Map<string, HostSession>,
  err: unknown,
  how: { launchInFlight: boolean; startedHere: boolean; interrupted: boolean },
): Promise<void> {
  const { config, replica, holder } = run;
  const i = replica.replica;
  const e = err instanceof TpuDeployError ? err : undefined;
  const code = e?.code ?? "internal";
  if (code === "usage" || code === "config_invalid" || code === "locked") return;
  // Cleanup must run even though the run's signal is aborted: a fresh one.
  const cleanup = withSignal(ctx, new AbortController().signal);
  try {
    const hosts = holder.replica(i).hosts;
    if (how.startedHere && hosts.some((h) => h.pgid) && sessions.size > 0) {
      ctx.report.info(`${replica.cluster}: stopping the servers started by this run`);
      await stopServers(sessions, config.name, hosts, 5).catch(() => undefined);
      holder.updateReplica(i, (r) => ({ ...r, hosts: r.hosts.map((h) => ({ ...h, pgid: undefined, startTime: undefined })) }));
    }
    const tearDown = how.interrupted && !run.keepOnFailure && (how.launchInFlight || run.downOnInterrupt);
    if (tearDown) {
      ctx.report.info(
        `tearing down ${replica.cluster} (interrupted while ${how.launchInFlight ? "launching" : "starting, with --down-on-interrupt"})`,
      );
      const r = holder.replica(i);
      await teardownCluster(
        cleanup,
        {
          name: replica.cluster,
          generation: config.tpu.generation,
          project: config.tpu.project,
          zones: r.zone ? [r.zone] : config.tpu.zones,
          nameOnCloud: r.nameOnCloud,
        },
        { leftovers: "all" },
      );
      // Verified gone: nothing of this replica is left in the cloud.
      holder.updateReplica(i, (x) => ({ ...x, hosts: [], phase: "launching", nameOnCloud: undefined }));
      run.onLeftNothing?.();
    } else if (how.interrupted && !how.launchInFlight) {
      const chips = config.topology.slice.chipsPerSlice;
      ctx.report.warn(
        `${replica.cluster} is kept (${config.tpu.accelerator}: ${chips} chips keep billing while it stays up): ` +
          `tpu-deploy up ${config.name} continues, tpu-deploy down ${config.name} removes it`,
      );
    }
  } catch (cleanupErr) {
    ctx.report.warn(`cleanup failed: ${(cleanupErr as Error).message}; check with tpu-deploy status ${config.name}`);
  }
  // A host that failed its key check stopped the run before anything was sent or stopped: the replica is
  // as it was (its servers, if any, still run), and the proxy keeps treating its head as one.
  const untouched = isHostKeyChange(err) && !how.interrupted;
  holder.updateReplica(i, (r) => ({
    ...r,
    phase: untouched || (r.phase === "launching" && !how.interrupted) ? r.phase : "failed",
    lastError: { code, message: (e?.message ?? String(err)).slice(0, 2000) },
  }));
  holder.event({ event: how.interrupted ? "interrupted" : "failed", replica: i, detail: code });
}
