// `tpu-deploy relaunch`: one cron-safe check of a deployment and, where needed, one attempt per replica to
// make it serve again. Never waits for the lock; decides each replica from the cheapest evidence first
// (app/assess.ts, core/relaunch.ts); restarts servers on live hosts, or cleans up a preempted replica and
// runs its part of the plan again while the other replicas keep serving. Backoff and give-up are per replica.
// Long because one cron-safe run (lock, gate, verdict, attempt, bookkeeping, webhook) reads best in one file.
import { resolveSecrets } from "../adapters/secrets.js";
import type { Lock } from "../adapters/state-store.js";
import { formatDuration } from "../core/duration.js";
import { deployHoldMs } from "../core/lock.js";
import {
  type Action,
  actionFor,
  attemptFailed,
  attemptInterrupted,
  attemptSucceeded,
  type BackoffPolicy,
  beginAttempt,
  chooseSpot,
  DEFAULT_BACKOFF,
  gate,
  needsClearing,
  notePreemption,
  orderZones,
  resetRelaunch,
  type Verdict,
  type VerdictKind,
} from "../core/relaunch.js";
import { addEvent, type DeploymentState, type ReplicaState, withReplica } from "../core/state.js";
import { EXIT, GaveUpError, LockedError, OperationError, type TpuDeployError, toTpuDeployError } from "../errors.js";
import { assess } from "./assess.js";
import { type AppContext, interruptedFrom, settleEach, throwIfAborted, withSignal } from "./context.js";
import { clusterRefOf, deploy, warnTakeover } from "./deploy.js";
import { requireState } from "./hosts.js";
import { assertOwned, NotOwnerError } from "./ownership.js";
import { teardownCluster } from "./teardown.js";
import { planFor } from "./up.js";
import { postWebhook } from "./webhook.js";

export interface RelaunchOptions {
  reset?: boolean;
  /** Bounds one attempt (the relaunch blocks until it serves or this passes). */
  timeoutMs?: number;
  /** From flags; the deployment's relaunch.backoff/backoffMax fill what is missing, then the defaults. */
  policy?: Partial<BackoffPolicy>;
  random?: () => number;
  /** Act on a cluster another tpu-deploy installation launched (its owner label). */
  force?: boolean;
}

/** busy: another run holds the lock (exit 0); stuck: it holds it past its deadline (exit 1, for monitoring). */
export type ReportedAction = Action | "backoff" | "busy" | "stuck" | "gave-up";

export interface ReplicaReport {
  replica: number;
  cluster: string;
  verdict: VerdictKind | null;
  action: ReportedAction;
  attempt: number;
  zone: string | null;
  nextAttemptAt: string | null;
  code: number;
  message: string;
  error?: { code: string; message: string; hint?: string; lastError?: { code: string; message: string } };
}

/** A deployment's report: its replicas', summed up (for one replica, that replica's own). */
export interface RelaunchReport extends Omit<ReplicaReport, "replica" | "cluster"> {
  name: string;
  replicas: ReplicaReport[];
}

export function backoffPolicy(config: DeploymentState["config"], flags: Partial<BackoffPolicy> = {}): BackoffPolicy {
  const baseMs = flags.baseMs ?? config.relaunch.backoffMs ?? DEFAULT_BACKOFF.baseMs;
  const maxMs = flags.maxMs ?? config.relaunch.backoffMaxMs ?? Math.max(DEFAULT_BACKOFF.maxMs, baseMs);
  return { ...DEFAULT_BACKOFF, ...flags, baseMs, maxMs: Math.max(maxMs, baseMs) };
}

/** Replicas relaunched at once within one run. */
const ATTEMPT_CONCURRENCY = 4;

export async function relaunchOne(ctx: AppContext, name: string, opts: RelaunchOptions = {}): Promise<RelaunchReport> {
  // Before the lock, which would create the directory of a mistyped name; its config bounds the lock.
  const recorded = requireState(ctx, name);
  let lock: Lock;
  try {
    lock = ctx.store.lock(name, "tpu-deploy relaunch", { maxHoldMs: deployHoldMs(recorded.config, opts.timeoutMs) });
  } catch (err) {
    if (!(err instanceof LockedError)) throw err;
    // A run past its deadline will likely never let go: every later cron run would be "busy" forever.
    if (err.stuck) {
      return summarizeReports(name, [], {
        verdict: null,
        action: "stuck",
        code: err.exitCode,
        message: err.message,
        error: errorJson(err),
      });
    }
    return summarizeReports(name, [], {
      verdict: null,
      action: "busy",
      code: EXIT.ok,
      message: `another run is in progress (${err.message}); nothing to do`,
    });
  }
  warnTakeover(ctx, name, lock);
  try {
    let state = requireState(ctx, name);
    if (opts.reset) {
      state = write(
        ctx,
        addEvent(
          { ...state, replicas: state.replicas.map((r) => ({ ...r, relaunch: resetRelaunch(r.relaunch) })) },
          { event: "relaunch-reset" },
          ctx.now(),
        ),
      );
      ctx.report.info(`${name}: relaunch attempts reset`);
    }
    // Exit 2 before anything is touched when a secret cannot be resolved, whatever the replicas need.
    const secrets = state.replicas.some((r) => !r.relaunch.gaveUp) ? resolveSecrets(state.config, ctx.env) : new Map<string, string>();
    const box = { state };
    const results = await settleEach(state.replicas, ATTEMPT_CONCURRENCY, (r) => checkReplica(ctx, box, r.replica, secrets, opts));
    const reports = results.map((r, i) => {
      if (r.status === "fulfilled") return r.value;
      if (ctx.signal.aborted) throw interruptedFrom(ctx.signal);
      const rep = state.replicas[i];
      return replicaErrorReport(rep?.replica ?? i, rep?.cluster ?? name, r.reason);
    });
    return summarizeReports(name, reports);
  } finally {
    lock.release();
  }
}

/** The state is shared by replicas checked in parallel: every change goes through this box, synchronously. */
interface Box {
  state: DeploymentState;
}

function write(ctx: AppContext, s: DeploymentState): DeploymentState {
  ctx.store.write(s);
  return s;
}

function updateReplica(
  ctx: AppContext,
  box: Box,
  i: number,
  fn: (r: ReplicaState) => ReplicaState,
  event?: Parameters<typeof addEvent>[1],
): ReplicaState {
  let next = withReplica(box.state, i, fn);
  if (event) next = addEvent(next, { ...event, replica: i }, ctx.now());
  box.state = write(ctx, next);
  return replicaOf(box, i);
}

function replicaOf(box: Box, i: number): ReplicaState {
  const r = box.state.replicas.find((x) => x.replica === i);
  if (!r) throw new OperationError("internal", `no replica ${i}`);
  return r;
}

async function checkReplica(
  ctx: AppContext,
  box: Box,
  i: number,
  secrets: Map<string, string>,
  opts: RelaunchOptions,
): Promise<ReplicaReport> {
  let r = replicaOf(box, i);
  const name = box.state.name;
  const base = { replica: i, cluster: r.cluster, attempt: r.relaunch.attempts, zone: r.zone ?? null };
  if (r.relaunch.gaveUp) {
    const err = gaveUpError(name, r);
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
  const verdict = await assess(ctx, box.state, r);
  // The probes may have pinned host keys of a state written before pinning (this run holds the lock, so the
  // file is the box plus those pins). A host whose key changed made assess throw: nothing is done to it.
  box.state = requireState(ctx, name);
  r = replicaOf(box, i);
  const action = actionFor(verdict.kind);
  const seen = { ...base, verdict: verdict.kind, action, nextAttemptAt: null };
  if (action === "none") {
    if (needsClearing(r.relaunch)) updateReplica(ctx, box, i, (x) => ({ ...x, relaunch: attemptSucceeded(x.relaunch) }));
    return { ...seen, attempt: 0, code: EXIT.ok, message: `healthy: ${verdict.reason}` };
  }
  if (action === "wait") return { ...seen, code: EXIT.ok, message: `still coming up: ${verdict.reason}` };
  if (action === "hold") {
    return {
      ...seen,
      code: EXIT.failed,
      message: `nothing done: ${verdict.reason}`,
      error: {
        code: "not_verified",
        message: verdict.reason,
        hint: `tpu-deploy status ${name} shows what is known; the next run checks again`,
      },
    };
  }
  if (action === "relaunch") r = notePreemptionOnce(ctx, box, r, verdict);
  const g = gate(r.relaunch, ctx.now());
  if (g.kind === "backoff") {
    const inMs = Date.parse(g.until) - ctx.now().getTime();
    return {
      ...seen,
      action: "backoff",
      nextAttemptAt: g.until,
      code: EXIT.ok,
      message: `${verdict.reason}; backing off after ${r.relaunch.attempts} failed attempt(s): next attempt at ${g.until} (in ${formatDuration(inMs)})`,
    };
  }
  return await attempt(ctx, box, r, verdict, action, secrets, opts);
}

function gaveUpError(name: string, r: ReplicaState): TpuDeployError {
  return new GaveUpError(
    `${r.cluster === name ? "gave up" : `${r.cluster} gave up`} after ${r.relaunch.attempts} failed relaunch attempt(s); nothing is done until a person acts`,
    {
      hint: `find the cause (tpu-deploy status ${name}), then tpu-deploy up, or tpu-deploy relaunch ${name} --reset to try again`,
    },
  );
}

function errorJson(e: TpuDeployError): { code: string; message: string; hint?: string } {
  return { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) };
}

function notePreemptionOnce(ctx: AppContext, box: Box, r: ReplicaState, verdict: Verdict): ReplicaState {
  const now = ctx.now();
  const since = r.servingSince ? Date.parse(r.servingSince) : Number.NaN;
  const servedMs = r.phase === "serving" && Number.isFinite(since) ? now.getTime() - since : 0;
  const seen = notePreemption(r.relaunch, { zone: r.zone, servedMs, now });
  if (!seen.first) return r;
  const event = r.spot ? "preempted" : "cluster-lost";
  const detail = `${verdict.reason}${seen.young ? `; served ${formatDuration(servedMs)} (< 1 h): ${r.zone ?? "the zone"} is tried later` : ""}`;
  ctx.report.info(`${r.cluster}: ${verdict.reason}`);
  return updateReplica(ctx, box, r.replica, (x) => ({ ...x, relaunch: seen.relaunch }), { event, zone: r.zone, detail });
}

async function attempt(
  ctx: AppContext,
  box: Box,
  r: ReplicaState,
  verdict: Verdict,
  action: Action,
  secrets: Map<string, string>,
  opts: RelaunchOptions,
): Promise<ReplicaReport> {
  const config = box.state.config;
  const name = box.state.name;
  const i = r.replica;
  const before = r.relaunch.attempts;
  const n = before + 1;
  const relaunching = action === "relaunch";
  try {
    await assertOwned(ctx, name, [r.cluster], { force: opts.force, doing: relaunching ? "relaunch it" : "restart its servers" });
  } catch (err) {
    if (!(err instanceof NotOwnerError)) throw err;
    // Another installation's cluster: nothing is done, and it is not a failed attempt.
    return {
      replica: i,
      cluster: r.cluster,
      verdict: verdict.kind,
      action: "hold",
      attempt: before,
      zone: r.zone ?? null,
      nextAttemptAt: null,
      code: err.exitCode,
      message: err.message,
      error: errorJson(err),
    };
  }
  const spot = relaunching ? chooseSpot(config.tpu.spot, r.relaunch.spotFailures, config.relaunch.onDemandAfter) : r.spot;
  const zones = relaunching ? orderZones(config.tpu.zones, r.relaunch.churn) : config.tpu.zones;
  r = updateReplica(ctx, box, i, (x) => ({ ...x, relaunch: beginAttempt(x.relaunch) }));
  const started = Date.now();
  ctx.report.info(
    relaunching
      ? `${r.cluster}: relaunching (attempt ${n} of ${config.relaunch.maxAttempts}, ${spot ? "spot" : "on-demand"}${config.tpu.spot && !spot ? ` after ${r.relaunch.spotFailures} failed spot attempt(s)` : ""}; zones ${zones.join(", ")})`
      : `${r.cluster}: ${verdict.reason}: restarting the servers on the same hosts (attempt ${n} of ${config.relaunch.maxAttempts})`,
  );
  const webhook = config.relaunch.webhook;
  const hook = { name, replica: i, cluster: r.cluster, attempt: n };
  await postWebhook(ctx, webhook, { ...hook, event: "started", zone: relaunching ? (zones[0] ?? null) : (r.zone ?? null) });

  const timeout = opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined;
  const runCtx = timeout ? withSignal(ctx, AbortSignal.any([ctx.signal, timeout])) : ctx;
  try {
    if (relaunching) {
      // Remnants first: sky's record of the dead cluster and its PREEMPTED/TERMINATED nodes still hold quota.
      // Only dead nodes: a READY one is never deleted here (core/relaunch.ts never relaunches it either).
      await teardownCluster(runCtx, clusterRefOf(box.state, r), { leftovers: "dead-only" });
      r = updateReplica(ctx, box, i, (x) => ({ ...x, phase: "launching", hosts: [], distInitAddr: undefined }));
    }
    throwIfAborted(runCtx.signal);
    await deploy(runCtx, config, planFor(ctx, config, { zones, spot, only: [i] }), secrets, {
      keepOnFailure: !relaunching,
      lockHeld: true,
      keepState: true,
      // The verdict already says the servers do not serve: restart even if a probe inside deploy() would pass.
      forceRestart: !relaunching,
    });
    box.state = requireState(ctx, name);
    const now = ctx.now();
    const s = replicaOf(box, i);
    const preemptedAt = s.relaunch.preemptedAt ? Date.parse(s.relaunch.preemptedAt) : Number.NaN;
    const backMs = Number.isFinite(preemptedAt) ? now.getTime() - preemptedAt : Date.now() - started;
    updateReplica(ctx, box, i, (x) => ({ ...x, relaunch: attemptSucceeded(x.relaunch) }), {
      event: "relaunch-attempt",
      zone: s.zone,
      attempt: n,
      detail: relaunching ? "ok: relaunched" : "ok: servers restarted",
    });
    const done = relaunching
      ? { event: "relaunched", zone: s.zone, attempt: n, durationMs: backMs }
      : { event: "restarted", zone: s.zone, attempt: n, durationMs: Date.now() - started };
    box.state = write(ctx, addEvent(box.state, { ...done, replica: i }, now));
    await postWebhook(ctx, webhook, { ...hook, event: "succeeded", zone: s.zone ?? null });
    const what = relaunching
      ? `relaunched in ${s.zone}${s.spot ? " (spot)" : " (on-demand)"}: serving again ${formatDuration(backMs)} after the loss was seen`
      : "servers restarted: serving again";
    return {
      replica: i,
      cluster: r.cluster,
      verdict: verdict.kind,
      action,
      attempt: n,
      zone: s.zone ?? null,
      nextAttemptAt: null,
      code: EXIT.ok,
      message: `${verdict.reason}; ${what}`,
    };
  } catch (err) {
    return await attemptFailedReport(ctx, box, r, { verdict, action, n, before, spot, relaunching, timeout, opts, err });
  }
}

async function attemptFailedReport(
  ctx: AppContext,
  box: Box,
  r: ReplicaState,
  a: {
    verdict: Verdict;
    action: Action;
    n: number;
    before: number;
    spot: boolean;
    relaunching: boolean;
    timeout: AbortSignal | undefined;
    opts: RelaunchOptions;
    err: unknown;
  },
): Promise<ReplicaReport> {
  const config = box.state.config;
  const name = box.state.name;
  const i = r.replica;
  const interrupted = ctx.signal.aborted;
  let e = interrupted ? interruptedFrom(ctx.signal) : toTpuDeployError(a.err);
  if (!interrupted && a.timeout?.aborted) {
    e = new OperationError(
      "readiness_timeout",
      `the ${a.relaunching ? "relaunch" : "restart"} did not serve within --timeout ${formatDuration(a.opts.timeoutMs ?? 0)}`,
      {
        hint: "the next run tries again; raise --timeout if a cold start needs longer",
        cause: a.err,
      },
    );
  }
  const fresh = ctx.store.read(name);
  if (fresh) box.state = fresh;
  const webhook = config.relaunch.webhook;
  const hook = { name, replica: i, cluster: r.cluster, attempt: a.n };
  const zoneNow = () => replicaOf(box, i).zone ?? null;
  if (interrupted) {
    updateReplica(ctx, box, i, (x) => ({ ...x, relaunch: attemptInterrupted(x.relaunch, a.before) }), {
      event: "relaunch-attempt",
      zone: zoneNow() ?? undefined,
      attempt: a.n,
      detail: "interrupted",
    });
    await postWebhook(ctx, webhook, { ...hook, event: "failed", zone: zoneNow(), error: { code: e.code, message: e.message } });
    throw e;
  }
  const now = ctx.now();
  const failed = updateReplica(
    ctx,
    box,
    i,
    (x) => ({
      ...x,
      relaunch: attemptFailed(x.relaunch, {
        spot: a.relaunching && a.spot,
        now,
        maxAttempts: config.relaunch.maxAttempts,
        policy: backoffPolicy(config, a.opts.policy),
        random: a.opts.random ?? Math.random,
      }),
    }),
    { event: "relaunch-attempt", zone: zoneNow() ?? undefined, attempt: a.n, detail: `failed (${e.code}): ${e.message.split("\n")[0]}` },
  );
  if (failed.relaunch.gaveUp) {
    box.state = write(
      ctx,
      addEvent(box.state, { event: "gave-up", replica: i, attempt: a.n, detail: `after ${a.n} failed attempt(s)` }, now),
    );
  }
  const error = { code: e.code, message: e.message };
  await postWebhook(ctx, webhook, { ...hook, event: "failed", zone: zoneNow(), error });
  const report = { replica: i, cluster: r.cluster, verdict: a.verdict.kind, action: a.action, attempt: a.n, zone: zoneNow() };
  if (failed.relaunch.gaveUp) {
    await postWebhook(ctx, webhook, { ...hook, event: "gave_up", zone: zoneNow(), error });
    const g = gaveUpError(name, failed);
    const message = `attempt ${a.n} failed (${e.code}); ${g.message}`;
    return { ...report, nextAttemptAt: null, code: g.exitCode, message, error: { ...errorJson(g), message, lastError: error } };
  }
  return {
    ...report,
    nextAttemptAt: failed.relaunch.nextAttemptAt ?? null,
    code: EXIT.failed,
    message: `attempt ${a.n} of ${config.relaunch.maxAttempts} failed (${e.code}); the next run after ${failed.relaunch.nextAttemptAt} tries again`,
    error: errorJson(e),
  };
}

function replicaErrorReport(replica: number, cluster: string, err: unknown): ReplicaReport {
  const e = toTpuDeployError(err);
  return {
    replica,
    cluster,
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

/** A target that failed before any verdict (no state, a missing secret, a cloud API error). */
export function errorReport(name: string, err: unknown): RelaunchReport {
  const r = replicaErrorReport(0, name, err);
  return summarizeReports(name, [r]);
}

// Which replica speaks for the deployment: the one that needed the most.
const WEIGHT: Record<ReportedAction, number> = {
  relaunch: 6,
  restart: 5,
  stuck: 4,
  hold: 4,
  "gave-up": 4,
  backoff: 3,
  busy: 2,
  wait: 1,
  none: 0,
};

function summarizeReports(
  name: string,
  replicas: ReplicaReport[],
  whenNone?: Pick<ReplicaReport, "verdict" | "action" | "code" | "message" | "error">,
): RelaunchReport {
  if (replicas.length === 0) {
    return {
      name,
      replicas,
      attempt: 0,
      zone: null,
      nextAttemptAt: null,
      ...(whenNone ?? { verdict: null, action: "none", code: EXIT.ok, message: "no replica" }),
    };
  }
  const [only] = replicas;
  if (replicas.length === 1 && only) {
    const { replica: _r, cluster: _c, ...rest } = only;
    return { name, ...rest, replicas };
  }
  const lead = [...replicas].sort((a, b) => WEIGHT[b.action] - WEIGHT[a.action] || b.code - a.code)[0] ?? only;
  const serving = replicas.filter(
    (r) => r.action === "none" || (r.code === EXIT.ok && (r.action === "restart" || r.action === "relaunch")),
  ).length;
  const message = `${serving}/${replicas.length} replicas serving; ${replicas.map((r) => `replica ${r.replica}: ${r.message}`).join("; ")}`;
  return {
    name,
    verdict: lead?.verdict ?? null,
    action: lead?.action ?? "none",
    attempt: Math.max(...replicas.map((r) => r.attempt)),
    zone: lead?.zone ?? null,
    nextAttemptAt: lead?.nextAttemptAt ?? null,
    code: combinedCode(replicas),
    message,
    ...(lead?.error ? { error: lead.error } : {}),
    replicas,
  };
}

/** The exit code of several targets: theirs when they agree, else 3 (mixed results). */
export function combinedCode(reports: readonly { code: number }[]): number {
  const codes = new Set(reports.map((r) => r.code));
  if (codes.size === 0) return EXIT.ok;
  if (codes.size === 1) return reports[0]?.code ?? EXIT.ok;
  return EXIT.partial;
}
