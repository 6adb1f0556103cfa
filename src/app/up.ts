// `tpu-deploy up`: validate, lock, launch with zone failover, find the hosts, assign ranks, check the
// rendezvous ports, start sglang-jax everywhere, wait until it serves. Resumable: the state file records
// progress, and a rerun continues instead of starting a second cluster.
import { closeSessions, type HostSession, httpViaSsh } from "../adapters/ssh.js";
import { resolveSecrets } from "../adapters/secrets.js";
import type { CommandResult, RunContext } from "../cli/program.js";
import { confirm } from "../cli/prompt.js";
import type { UpFlags } from "../cli/commands/up.js";
import type { Config } from "../core/config.js";
import { formatDuration, timerDuration } from "../core/duration.js";
import type { DeployPlan } from "../core/plan.js";
import { distInitAddr as distInitAddrOf } from "../core/ranks.js";
import { addEvent, type DeploymentState, newState, resourcesKey, serverKey } from "../core/state.js";
import { OperationError, TpuDeployError, UsageError } from "../errors.js";
import { type AppContext, interruptedFrom, makeContext } from "./context.js";
import { discoverCluster, skyRecord } from "./discover.js";
import { sessionsFor } from "./hosts.js";
import { launchWithFailover } from "./launch.js";
import { checkPorts, startServers, stopServers, toHostRecords, waitReady } from "./servers.js";
import { teardownCluster } from "./teardown.js";

export interface UpSummary {
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

export async function runUp(
  config: Config,
  _plan: DeployPlan,
  template: { text: string; name: string },
  opts: UpFlags,
  _args: string[],
  run: RunContext,
): Promise<CommandResult> {
  // One signal for the whole run: Ctrl-C, or --timeout.
  const timeout = opts.timeout === undefined ? undefined : timerDuration(opts.timeout);
  if (timeout && !timeout.ok) throw new UsageError(`--timeout '${opts.timeout}' ${timeout.problem}`);
  const signals = [run.signal];
  if (timeout?.ok) {
    signals.push(AbortSignal.timeout(timeout.ms));
  }
  const signal = AbortSignal.any(signals);
  const ctx = makeContext(run.io, signal, opts, run.now);
  const secrets = resolveSecrets(config, ctx.env); // exit 2 before anything is launched
  try {
    const summary = await deploy(ctx, config, template, secrets, {
      recreate: Boolean(opts.recreate),
      keepOnFailure: Boolean(opts.keepOnFailure),
      yes: Boolean(opts.yes),
    });
    ctx.report.stop();
    if (!opts.json) printSummary(ctx, summary);
    return { code: 0, json: summary };
  } catch (err) {
    if (signal.aborted && !run.signal.aborted && !(err instanceof TpuDeployError && err.code !== "interrupted")) {
      throw new OperationError("readiness_timeout", `up did not finish within --timeout ${opts.timeout}`, {
        hint: "raise --timeout; a cold start can take 30+ minutes",
      });
    }
    throw err;
  } finally {
    await ctx.close();
  }
}

export interface DeployOptions {
  recreate: boolean;
  keepOnFailure: boolean;
  /** Relaunch passes its own spot choice (on-demand fallback) and blocked zones. */
  spot?: boolean;
  lockHeld?: boolean;
  /** Relaunch keeps the deployment's record when it tears a half-made cluster down, so the next run retries. */
  keepState?: boolean;
  /** restart: stop and start the servers even when they serve with these settings. */
  forceRestart?: boolean;
  /** -y: --recreate may tear the old cluster down without asking. */
  yes?: boolean;
}

export async function deploy(
  ctx: AppContext,
  config: Config,
  template: { text: string; name: string },
  secrets: Map<string, string>,
  opts: DeployOptions,
): Promise<UpSummary> {
  const lock = opts.lockHeld ? undefined : ctx.store.lock(config.name, "tpu-deploy up");
  if (lock?.tookOverFrom) {
    ctx.report.warn(
      `took over the lock of ${config.name} from pid ${lock.tookOverFrom.pid} (${lock.tookOverFrom.command}), which is no longer running`,
    );
  }
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
    if (state.hosts.length > 0 || state.phase !== "launching") {
      if (resourcesKey(state.config) !== resourcesKey(config)) {
        if (!opts.recreate) {
          throw new UsageError(
            `${config.name} exists with other resources (${state.config.topology.slices} x ${state.config.tpu.accelerator}); this needs a new cluster`,
            {
              hint: `run again with --recreate to tear it down and launch the new one, or tpu-deploy down ${config.name} first`,
            },
          );
        }
        await confirm(
          ctx.io,
          `Tear down ${config.name} (${state.config.topology.slices} x ${state.config.tpu.accelerator}) to launch ${config.topology.slices} x ${config.tpu.accelerator}?`,
          Boolean(opts.yes),
        );
        phase(`recreating: tearing down the old cluster`);
        await stopQuietly(ctx, state);
        await teardownCluster(ctx, state.config, { nameOnCloud: state.nameOnCloud, zone: state.zone });
        state = newState(config);
      } else if (serverKey(state.config) !== serverKey(config)) {
        ctx.report.info(`model or server settings changed: restarting the servers only`);
      }
    }
    const unchanged =
      state.phase === "serving" && serverKey(state.config) === serverKey(config) && resourcesKey(state.config) === resourcesKey(config);
    state = save({ ...state, config, spot: opts.spot ?? config.tpu.spot, lastError: undefined });

    // 1. Launch, unless the cluster from an earlier run is up and finished its launch.
    const record = state.phase !== "launching" ? await skyRecord(ctx, config.name) : undefined;
    if (record?.status === "UP" && state.zone) {
      phase(`cluster ${config.name} is up in ${state.zone}: reusing it`);
      if (unchanged && !opts.forceRestart && (await stillServing(ctx, state))) {
        phase("already serving with these settings: nothing to do");
        return summarize(config, state);
      }
    } else {
      phase("provisioning");
      state = save({ ...state, phase: "launching", hosts: [] });
      launchedHere = true;
      const t0 = Date.now();
      const { result, state: s2 } = await launchWithFailover(
        ctx,
        {
          config,
          template,
          secrets,
          spot: state.spot,
          blocked: state.relaunch.blocked,
          launchTimeoutMs: config.launch.timeoutMs,
          onSetup: (zone) => phase(`setup: installing sglang-jax ${config.sglang.ref} on every host (${zone})`),
        },
        state,
        save,
      );
      state = s2;
      if (!result.ok) {
        const tried = result.attempts
          .map((a) => `${a.zone}: ${a.outcome}${a.message ? ` (${a.message.split("\n")[0]})` : ""}`)
          .join("\n  ");
        throw new OperationError(
          result.kind,
          `no zone could provide ${config.topology.slices} x ${config.tpu.accelerator}${state.spot ? " (spot)" : ""}:\n  ${tried}`,
          {
            hint:
              result.kind === "quota"
                ? "request more TPU quota for the region, or add zones in other regions (--zone)"
                : "add zones (--zone, tried in order), try on-demand, or retry later",
          },
        );
      }
      state = save({
        ...state,
        phase: "launched",
        zone: result.zone,
        launchedAt: ctx.now().toISOString(),
        timings: { ...state.timings, launchMs: Date.now() - t0 },
      });
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
    await checkPorts(ctx, sessions, hostsNow, config.server.distPort);
    phase(`ports ${config.server.distPort}, ${config.server.distPort + 5}, ${config.server.distPort + 6} open between hosts`);

    // 4. Start every rank.
    phase("starting ranks");
    const tStart = Date.now();
    const startedHosts = await startServers(ctx, sessions, config, hostsNow, dist, secrets);
    state = save(
      addEvent(
        { ...state, hosts: startedHosts, timings: { ...state.timings, portsMs: tStart - tPorts } },
        { event: "servers-started" },
        ctx.now(),
      ),
    );

    // 5. Wait until it serves.
    const apiKey = config.server.apiKeySecret ? secrets.get(config.server.apiKeySecret) : undefined;
    const ready = await waitReady(ctx, sessions, config, startedHosts, dist, {
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
      ...prefixKeys(ready.phases, "phase."),
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
      keepOnFailure: opts.keepOnFailure,
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

async function onFailure(
  ctx: AppContext,
  config: Config,
  state: DeploymentState,
  sessions: Map<string, HostSession>,
  err: unknown,
  how: { launchedHere: boolean; keepOnFailure: boolean; interrupted: boolean; keepState: boolean; newRecord?: boolean },
): Promise<void> {
  const e = err instanceof TpuDeployError ? err : undefined;
  const code = e?.code ?? "internal";
  // Cleanup must run even though the run's signal is aborted: use a fresh context signal.
  const cleanupCtx: AppContext = { ...ctx, signal: new AbortController().signal };
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
      await teardownCluster(cleanupCtx, config, { nameOnCloud: state.nameOnCloud, zone: state.zone });
      state = { ...state, hosts: [], phase: "launching" };
      if (!how.keepState) {
        ctx.store.remove(config.name);
        return;
      }
    }
    // Nothing exists for these: every zone's half-made cluster was already removed, or sky never started.
    const nothingLaunched =
      code === "capacity" || code === "quota" || ((code === "sky_not_found" || code === "invalid_task") && how.newRecord === true);
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

/** One health probe of rank 0 (/health_generate through SSH), for an up that may have nothing to do. */
async function stillServing(ctx: AppContext, state: DeploymentState): Promise<boolean> {
  const rank0 = state.hosts.find((h) => h.rank === 0);
  if (!rank0) return false;
  const hs = await sessionsFor(ctx, [rank0], 15_000);
  try {
    const s = hs.sessions.get(rank0.sshAlias);
    if (!s) return false;
    const r = await httpViaSsh(s, rank0.internalIp, state.config.server.port, { path: "/health_generate", timeoutMs: 60_000 });
    return r.status === 200;
  } catch {
    return false;
  } finally {
    await hs.close();
  }
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

function prefixKeys(o: Record<string, number>, prefix: string): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [`${prefix}${k}Ms`, v]));
}

export function summarize(config: Config, state: DeploymentState): UpSummary {
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

function printSummary(ctx: AppContext, s: UpSummary): void {
  const out = ctx.io.stdout;
  out.write(`${s.name} is serving ${s.accelerator}${s.spot ? " (spot)" : ""} in ${s.zone}\n`);
  out.write(`  reach it:   ${s.endpoint.proxy}   (then http://127.0.0.1:<port>/v1/chat/completions)\n`);
  if (s.endpoint.public) out.write(`  public:     ${s.endpoint.public}\n`);
  out.write(`  rendezvous: --dist-init-addr ${s.distInitAddr}\n`);
  out.write("  RANK  SLICE  WORKER  INTERNAL         EXTERNAL         SSH\n");
  for (const h of s.hosts) {
    out.write(
      `  ${String(h.rank).padEnd(4)}  ${String(h.slice).padEnd(5)}  ${String(h.workerId).padEnd(6)}  ${h.internalIp.padEnd(15)}  ${h.externalIp.padEnd(15)}  ${h.sshHost}\n`,
    );
  }
  const t = s.timings;
  const parts = [
    t.launchMs !== undefined ? `launch ${formatDuration(t.launchMs)}` : undefined,
    t.readyMs !== undefined ? `start→serving ${formatDuration(t.readyMs)}` : undefined,
    t.totalMs !== undefined ? `total ${formatDuration(t.totalMs)}` : undefined,
  ].filter(Boolean);
  if (parts.length > 0) out.write(`  timings:    ${parts.join(", ")}\n`);
}
