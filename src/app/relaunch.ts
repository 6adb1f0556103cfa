// `tpu-deploy relaunch`: one cron-safe check of a deployment and, when needed, one attempt to make it
// serve again. Never waits for the lock; decides from the cheapest evidence first (core/relaunch.ts);
// restarts servers on healthy hosts, or cleans up a preempted cluster and runs the `up` path again.
import { httpViaSsh } from "../adapters/ssh/http.js";
import { nodesOfCluster } from "../adapters/tpu-api.js";
import { resolveSecrets } from "../adapters/secrets.js";
import type { Lock } from "../adapters/state-store.js";
import { loadTemplate } from "../cli/load-spec.js";
import { formatDuration } from "../core/duration.js";
import {
  type Action,
  actionFor,
  attemptFailed,
  attemptInterrupted,
  attemptSucceeded,
  type BackoffPolicy,
  beginAttempt,
  chooseSpot,
  decide,
  DEFAULT_BACKOFF,
  type Evidence,
  gate,
  needsClearing,
  notePreemption,
  orderZones,
  type ProcessState,
  resetRelaunch,
  type Verdict,
  type VerdictKind,
} from "../core/relaunch.js";
import { aliveCommand } from "../core/remote.js";
import { addEvent, type DeploymentState } from "../core/state.js";
import { CloudApiError, GaveUpError, InternalError, OperationError, type TpuDeployError, toTpuDeployError } from "../errors.js";
import { type AppContext, interruptedFrom, sleep, throwIfAborted } from "./context.js";
import { skyRecord } from "./discover.js";
import { requireState, sessionsFor } from "./hosts.js";
import { teardownCluster } from "./teardown.js";
import { deploy } from "./up.js";
import { postWebhook } from "./webhook.js";

export interface RelaunchOptions {
  reset?: boolean;
  /** Bounds one attempt (the relaunch blocks until it serves or this passes). */
  timeoutMs?: number;
  /** From flags; the deployment's relaunch.backoff/backoffMax fill what is missing, then the defaults. */
  policy?: Partial<BackoffPolicy>;
  random?: () => number;
}

export type ReportedAction = Action | "backoff" | "busy" | "gave-up";

export interface RelaunchReport {
  name: string;
  verdict: VerdictKind | null;
  action: ReportedAction;
  attempt: number;
  zone: string | null;
  nextAttemptAt: string | null;
  code: number;
  message: string;
  error?: { code: string; message: string; hint?: string; lastError?: { code: string; message: string } };
}

export function backoffPolicy(config: DeploymentState["config"], flags: Partial<BackoffPolicy> = {}): BackoffPolicy {
  const baseMs = flags.baseMs ?? config.relaunch.backoffMs ?? DEFAULT_BACKOFF.baseMs;
  const maxMs = flags.maxMs ?? config.relaunch.backoffMaxMs ?? Math.max(DEFAULT_BACKOFF.maxMs, baseMs);
  return { ...DEFAULT_BACKOFF, ...flags, baseMs, maxMs: Math.max(maxMs, baseMs) };
}

export async function relaunchOne(ctx: AppContext, name: string, opts: RelaunchOptions = {}): Promise<RelaunchReport> {
  requireState(ctx, name); // before the lock, which would create the directory of a mistyped name
  let lock: Lock;
  try {
    lock = ctx.store.lock(name, "tpu-deploy relaunch");
  } catch (err) {
    if (err instanceof OperationError && err.code === "locked") {
      return {
        name,
        verdict: null,
        action: "busy",
        attempt: 0,
        zone: null,
        nextAttemptAt: null,
        code: 0,
        message: `another run is in progress (${err.message}); nothing to do`,
      };
    }
    throw err;
  }
  if (lock.tookOverFrom)
    ctx.report.warn(
      `took over the lock of ${name} from pid ${lock.tookOverFrom.pid} (${lock.tookOverFrom.command}), which is no longer running`,
    );
  try {
    let state = requireState(ctx, name);
    if (opts.reset) {
      state = write(ctx, addEvent({ ...state, relaunch: resetRelaunch(state.relaunch) }, { event: "relaunch-reset" }, ctx.now()));
      ctx.report.info(`${name}: relaunch attempts reset`);
    }
    const base = { name, attempt: state.relaunch.attempts, zone: state.zone ?? null };
    if (state.relaunch.gaveUp) {
      const err = gaveUpError(name, state.relaunch.attempts);
      return {
        ...base,
        verdict: null,
        action: "gave-up",
        nextAttemptAt: null,
        code: err.exitCode,
        message: err.message,
        error: errorJson(err),
      };
    }
    const secrets = resolveSecrets(state.config, ctx.env); // exit 2 before anything is touched
    const verdict = await assess(ctx, state);
    const action = actionFor(verdict.kind);
    const seen = { ...base, verdict: verdict.kind, action, nextAttemptAt: null };
    if (action === "none") {
      if (needsClearing(state.relaunch)) write(ctx, { ...state, relaunch: attemptSucceeded(state.relaunch) });
      return { ...seen, attempt: 0, code: 0, message: `healthy: ${verdict.reason}` };
    }
    if (action === "wait") return { ...seen, code: 0, message: `still coming up: ${verdict.reason}` };

    if (action === "relaunch") state = notePreemptionOnce(ctx, state, verdict);
    const g = gate(state.relaunch, ctx.now());
    if (g.kind === "backoff") {
      const inMs = Date.parse(g.until) - ctx.now().getTime();
      return {
        ...seen,
        action: "backoff",
        nextAttemptAt: g.until,
        code: 0,
        message: `${verdict.reason}; backing off after ${state.relaunch.attempts} failed attempt(s): next attempt at ${g.until} (in ${formatDuration(inMs)})`,
      };
    }
    return await attempt(ctx, state, verdict, action, secrets, opts);
  } finally {
    lock.release();
  }
}

function write(ctx: AppContext, s: DeploymentState): DeploymentState {
  ctx.store.write(s);
  return s;
}

function gaveUpError(name: string, attempts: number): TpuDeployError {
  return new GaveUpError(`gave up after ${attempts} failed relaunch attempt(s); nothing is done until a person acts`, {
    hint: `find the cause (tpu-deploy status ${name}), then tpu-deploy up, or tpu-deploy relaunch ${name} --reset to try again`,
  });
}

function errorJson(e: TpuDeployError): { code: string; message: string; hint?: string } {
  return { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) };
}

function notePreemptionOnce(ctx: AppContext, state: DeploymentState, verdict: Verdict): DeploymentState {
  const now = ctx.now();
  const since = state.servingSince ? Date.parse(state.servingSince) : Number.NaN;
  const servedMs = state.phase === "serving" && Number.isFinite(since) ? now.getTime() - since : 0;
  const seen = notePreemption(state.relaunch, { zone: state.zone, servedMs, now });
  if (!seen.first) return state;
  const event = state.spot ? "preempted" : "cluster-lost";
  const detail = `${verdict.reason}${seen.young ? `; served ${formatDuration(servedMs)} (< 1 h): ${state.zone ?? "the zone"} is tried later` : ""}`;
  ctx.report.info(`${state.name}: ${verdict.reason}`);
  return write(ctx, addEvent({ ...state, relaunch: seen.relaunch }, { event, zone: state.zone, detail }, now));
}

async function attempt(
  ctx: AppContext,
  state: DeploymentState,
  verdict: Verdict,
  action: Action,
  secrets: Map<string, string>,
  opts: RelaunchOptions,
): Promise<RelaunchReport> {
  const config = state.config;
  const name = state.name;
  const before = state.relaunch.attempts;
  const n = before + 1;
  const relaunching = action === "relaunch";
  const spot = relaunching ? chooseSpot(config.tpu.spot, state.relaunch.spotFailures, config.relaunch.onDemandAfter) : state.spot;
  const zones = relaunching ? orderZones(config.tpu.zones, state.relaunch.churn) : config.tpu.zones;
  state = write(ctx, { ...state, relaunch: beginAttempt(state.relaunch) });
  const started = Date.now();
  ctx.report.info(
    relaunching
      ? `${name}: relaunching (attempt ${n} of ${config.relaunch.maxAttempts}, ${spot ? "spot" : "on-demand"}${config.tpu.spot && !spot ? ` after ${state.relaunch.spotFailures} failed spot attempt(s)` : ""}; zones ${zones.join(", ")})`
      : `${name}: ${verdict.reason}: restarting the servers on the same hosts (attempt ${n} of ${config.relaunch.maxAttempts})`,
  );
  const webhook = config.relaunch.webhook;
  await postWebhook(ctx, webhook, { event: "started", name, attempt: n, zone: relaunching ? (zones[0] ?? null) : (state.zone ?? null) });

  const timeout = opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined;
  const runCtx: AppContext = timeout ? { ...ctx, signal: AbortSignal.any([ctx.signal, timeout]) } : ctx;
  try {
    if (relaunching) {
      // Remnants first: sky's record of the dead cluster and its PREEMPTED/TERMINATED nodes still hold quota.
      await teardownCluster(runCtx, config, { nameOnCloud: state.nameOnCloud, zone: state.zone });
      state = write(ctx, { ...state, phase: "launching", hosts: [], distInitAddr: undefined });
    }
    throwIfAborted(runCtx.signal);
    await deploy(runCtx, { ...config, tpu: { ...config.tpu, zones } }, loadTemplate(config), secrets, {
      recreate: false,
      keepOnFailure: !relaunching,
      spot,
      lockHeld: true,
      keepState: true,
      // The verdict already says the servers do not serve: restart even if a probe inside deploy() would pass.
      forceRestart: !relaunching,
    });
    const now = ctx.now();
    let s = ctx.store.read(name) ?? state;
    const preemptedAt = s.relaunch.preemptedAt ? Date.parse(s.relaunch.preemptedAt) : Number.NaN;
    const backMs = Number.isFinite(preemptedAt) ? now.getTime() - preemptedAt : Date.now() - started;
    s = addEvent(
      { ...s, config, relaunch: attemptSucceeded(s.relaunch) },
      { event: "relaunch-attempt", zone: s.zone, attempt: n, detail: relaunching ? "ok: relaunched" : "ok: servers restarted" },
      now,
    );
    s = addEvent(
      s,
      relaunching
        ? { event: "relaunched", zone: s.zone, attempt: n, durationMs: backMs }
        : { event: "restarted", zone: s.zone, attempt: n, durationMs: Date.now() - started },
      now,
    );
    write(ctx, s);
    await postWebhook(ctx, webhook, { event: "succeeded", name, attempt: n, zone: s.zone ?? null });
    const what = relaunching
      ? `relaunched in ${s.zone}${s.spot ? " (spot)" : " (on-demand)"}: serving again ${formatDuration(backMs)} after the loss was seen`
      : `servers restarted: serving again`;
    return {
      name,
      verdict: verdict.kind,
      action,
      attempt: n,
      zone: s.zone ?? null,
      nextAttemptAt: null,
      code: 0,
      message: `${verdict.reason}; ${what}`,
    };
  } catch (err) {
    const interrupted = ctx.signal.aborted;
    let e = interrupted ? interruptedFrom(ctx.signal) : toTpuDeployError(err);
    if (!interrupted && timeout?.aborted) {
      e = new OperationError(
        "readiness_timeout",
        `the ${relaunching ? "relaunch" : "restart"} did not serve within --timeout ${formatDuration(opts.timeoutMs ?? 0)}`,
        {
          hint: "the next run tries again; raise --timeout if a cold start needs longer",
          cause: err,
        },
      );
    }
    let s = ctx.store.read(name) ?? state;
    s = { ...s, config };
    const now = ctx.now();
    if (interrupted) {
      write(
        ctx,
        addEvent(
          { ...s, relaunch: attemptInterrupted(s.relaunch, before) },
          { event: "relaunch-attempt", zone: s.zone, attempt: n, detail: "interrupted" },
          now,
        ),
      );
      await postWebhook(ctx, webhook, {
        event: "failed",
        name,
        attempt: n,
        zone: s.zone ?? null,
        error: { code: e.code, message: e.message },
      });
      throw e;
    }
    const relaunch = attemptFailed(s.relaunch, {
      spot: relaunching && spot,
      now,
      maxAttempts: config.relaunch.maxAttempts,
      policy: backoffPolicy(config, opts.policy),
      random: opts.random ?? Math.random,
    });
    s = addEvent(
      { ...s, relaunch },
      { event: "relaunch-attempt", zone: s.zone, attempt: n, detail: `failed (${e.code}): ${e.message.split("\n")[0]}` },
      now,
    );
    if (relaunch.gaveUp) s = addEvent(s, { event: "gave-up", attempt: n, detail: `after ${n} failed attempt(s)` }, now);
    write(ctx, s);
    const error = { code: e.code, message: e.message };
    await postWebhook(ctx, webhook, { event: "failed", name, attempt: n, zone: s.zone ?? null, error });
    const report = { name, verdict: verdict.kind, action, attempt: n, zone: s.zone ?? null };
    if (relaunch.gaveUp) {
      await postWebhook(ctx, webhook, { event: "gave_up", name, attempt: n, zone: s.zone ?? null, error });
      const g = gaveUpError(name, n);
      const message = `attempt ${n} failed (${e.code}); ${g.message}`;
      return { ...report, nextAttemptAt: null, code: g.exitCode, message, error: { ...errorJson(g), message, lastError: error } };
    }
    return {
      ...report,
      nextAttemptAt: relaunch.nextAttemptAt ?? null,
      code: 1,
      message: `attempt ${n} of ${config.relaunch.maxAttempts} failed (${e.code}); the next run after ${relaunch.nextAttemptAt} tries again`,
      error: errorJson(e),
    };
  }
}

/** The verdict from the cheapest evidence first; each probe only when the evidence so far is not conclusive. */
export async function assess(ctx: AppContext, state: DeploymentState): Promise<Verdict> {
  const config = state.config;
  const project = config.tpu.project;
  const ev: Evidence = {
    apiServes: config.tpu.generation === "v6e" && Boolean(project && state.zone && state.nameOnCloud),
    spot: state.spot,
    phase: state.phase,
    hosts: state.hosts.length,
    startedAt: state.history.findLast((e) => e.event === "servers-started")?.at,
    readyTimeoutMs: config.server.readyTimeoutMs,
    now: ctx.now(),
  };
  for (let step = 0; step < 8; step++) {
    const d = decide(ev);
    if (d.kind === "verdict") return d.verdict;
    ctx.report.debug(`relaunch ${state.name}: probing ${d.probe}`);
    switch (d.probe) {
      case "tpu-nodes":
        ev.tpuNodes = await tpuNodes(ctx, project ?? "", state.zone ?? "", state.nameOnCloud ?? "");
        break;
      case "sky-status":
      case "sky-refresh": {
        const rec = await skyRecord(ctx, state.name, { refresh: d.probe === "sky-refresh" });
        const view = rec ? { status: rec.status } : ("missing" as const);
        if (d.probe === "sky-status") ev.sky = view;
        else ev.skyRefreshed = view;
        break;
      }
      case "health":
        ev.health = await probeHealth(ctx, state);
        break;
      case "processes":
        ev.processes = await probeProcesses(ctx, state);
        break;
    }
    throwIfAborted(ctx.signal);
  }
  throw new InternalError(`relaunch ${state.name}: the evidence never became conclusive`);
}

async function tpuNodes(ctx: AppContext, project: string, zone: string, nameOnCloud: string): Promise<Evidence["tpuNodes"]> {
  try {
    const api = await ctx.tpuApi();
    return nodesOfCluster(await api.listNodes(project, zone), nameOnCloud).map((n) => ({ name: n.name, state: n.state }));
  } catch (err) {
    if (!(err instanceof CloudApiError)) throw err;
    ctx.report.warn(`Cloud TPU API unavailable (${err.message}); asking SkyPilot instead`);
    return "unavailable";
  }
}

async function probeHealth(ctx: AppContext, state: DeploymentState): Promise<Evidence["health"]> {
  const rank0 = state.hosts.find((h) => h.rank === 0);
  if (!rank0) return "unreachable";
  const hs = await sessionsFor(ctx, [rank0], 15_000);
  try {
    const s = hs.sessions.get(rank0.sshAlias);
    if (!s) return "unreachable";
    const r = await httpViaSsh(s, rank0.internalIp, state.config.server.port, {
      path: "/health_generate",
      timeoutMs: 30_000,
      signal: ctx.signal,
    });
    return r.status === 200 ? "ok" : "failing";
  } catch (err) {
    if (ctx.signal.aborted) throw interruptedFrom(ctx.signal);
    ctx.report.debug(`rank 0 health: ${(err as Error).message}`);
    return "unreachable";
  } finally {
    await hs.close();
  }
}

async function probeProcesses(ctx: AppContext, state: DeploymentState): Promise<ProcessState[]> {
  const hosts = [...state.hosts].sort((a, b) => a.rank - b.rank);
  const hs = await sessionsFor(ctx, hosts, 15_000);
  try {
    return await Promise.all(
      hosts.map(async (h): Promise<ProcessState> => {
        const s = hs.sessions.get(h.sshAlias);
        if (!s) return "unreachable";
        if (!h.pgid) return "not started";
        const r = await s.exec(aliveCommand(h.pgid), { timeoutMs: 10_000, signal: ctx.signal }).catch(() => undefined);
        if (!r) return "unreachable";
        return r.stdout.includes("alive") ? "running" : "dead";
      }),
    );
  } finally {
    await hs.close();
  }
}

/** A target that failed before any verdict (no state, a missing secret, a cloud API error). */
export function errorReport(name: string, err: unknown): RelaunchReport {
  const e = toTpuDeployError(err);
  return {
    name,
    verdict: null,
    action: "none",
    attempt: 0,
    zone: null,
    nextAttemptAt: null,
    code: e.exitCode,
    message: e.message,
    error: errorJson(e),
  };
}

/** The exit code of several targets: theirs when they agree, else 3 (mixed results). */
export function combinedCode(reports: readonly RelaunchReport[]): number {
  const codes = new Set(reports.map((r) => r.code));
  if (codes.size === 0) return 0;
  if (codes.size === 1) return reports[0]?.code ?? 0;
  return 3;
}

export interface WatchOptions extends RelaunchOptions {
  names: string[] | "all";
  intervalMs: number;
  onReport(r: RelaunchReport, changed: boolean): void;
}

/**
 * The relaunch check in a loop, one lock per pass. Stops when the run's signal aborts (SIGTERM/SIGINT):
 * an attempt under way cleans up through deploy()'s own interrupt path and records the attempt as
 * interrupted, so the next run (cron, or watch again) finishes the job. Returns the last reports.
 */
export async function watch(
  ctx: AppContext,
  opts: WatchOptions,
): Promise<{ reports: RelaunchReport[]; stopped: "signal" | "gave-up" | "gone" }> {
  const last = new Map<string, string>();
  let reports: RelaunchReport[] = [];
  for (let pass = 0; ; pass++) {
    const names = opts.names === "all" ? ctx.store.list() : opts.names;
    reports = [];
    for (const name of names) {
      if (ctx.signal.aborted) return { reports, stopped: "signal" };
      let r: RelaunchReport;
      try {
        r = await relaunchOne(ctx, name, opts);
      } catch (err) {
        if (ctx.signal.aborted) return { reports, stopped: "signal" };
        r = errorReport(name, err);
      }
      reports.push(r);
      const key = `${r.verdict}/${r.action}/${r.code}/${r.nextAttemptAt}`;
      opts.onReport(r, last.get(name) !== key);
      last.set(name, key);
    }
    if (opts.names !== "all") {
      if (reports.length > 0 && reports.every((r) => r.action === "gave-up" || r.code === 4)) return { reports, stopped: "gave-up" };
      // A deployment torn down with `down` while watched: nothing left to watch.
      if (pass > 0 && reports.length > 0 && reports.every((r) => r.error?.code === "not_found")) return { reports, stopped: "gone" };
    }
    try {
      await sleep(opts.intervalMs, ctx.signal);
    } catch {
      return { reports, stopped: "signal" };
    }
  }
}
