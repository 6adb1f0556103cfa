// `tpu-deploy relaunch`: one cron-safe check of a deployment and, when needed, one attempt to make it
// serve again. Never waits for the lock; decides from the cheapest evidence first (core/relaunch.ts);
// restarts servers on healthy hosts, or cleans up a preempted cluster and runs the `up` path again.
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
import { addEvent, type DeploymentState } from "../core/state.js";
import { EXIT, GaveUpError, LockedError, OperationError, type TpuDeployError, toTpuDeployError } from "../errors.js";
import { assess } from "./assess.js";
import { type AppContext, interruptedFrom, throwIfAborted, withSignal } from "./context.js";
import { clusterRefOf, deploy, warnTakeover } from "./deploy.js";
import { requireState } from "./hosts.js";
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
}

/** busy: another run holds the lock (exit 0); stuck: it holds it past its deadline (exit 1, for monitoring). */
export type ReportedAction = Action | "backoff" | "busy" | "stuck" | "gave-up";

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
  // Before the lock, which would create the directory of a mistyped name; its config bounds the lock.
  const recorded = requireState(ctx, name);
  let lock: Lock;
  try {
    lock = ctx.store.lock(name, "tpu-deploy relaunch", { maxHoldMs: deployHoldMs(recorded.config, opts.timeoutMs) });
  } catch (err) {
    if (!(err instanceof LockedError)) throw err;
    const none = { name, verdict: null, attempt: 0, zone: null, nextAttemptAt: null };
    // A run past its deadline will likely never let go: every later cron run would be "busy" forever.
    if (err.stuck) return { ...none, action: "stuck", code: err.exitCode, message: err.message, error: errorJson(err) };
    return { ...none, action: "busy", code: EXIT.ok, message: `another run is in progress (${err.message}); nothing to do` };
  }
  warnTakeover(ctx, name, lock);
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
      return { ...seen, attempt: 0, code: EXIT.ok, message: `healthy: ${verdict.reason}` };
    }
    if (action === "wait") return { ...seen, code: EXIT.ok, message: `still coming up: ${verdict.reason}` };

    if (action === "relaunch") state = notePreemptionOnce(ctx, state, verdict);
    const g = gate(state.relaunch, ctx.now());
    if (g.kind === "backoff") {
      const inMs = Date.parse(g.until) - ctx.now().getTime();
      return {
        ...seen,
        action: "backoff",
        nextAttemptAt: g.until,
        code: EXIT.ok,
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
  const runCtx = timeout ? withSignal(ctx, AbortSignal.any([ctx.signal, timeout])) : ctx;
  try {
    if (relaunching) {
      // Remnants first: sky's record of the dead cluster and its PREEMPTED/TERMINATED nodes still hold quota.
      await teardownCluster(runCtx, clusterRefOf(state), { leftovers: "dead-only" });
      state = write(ctx, { ...state, phase: "launching", hosts: [], distInitAddr: undefined });
    }
    throwIfAborted(runCtx.signal);
    await deploy(runCtx, config, planFor(ctx, config, { zones, spot }), secrets, {
      keepOnFailure: !relaunching,
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
      code: EXIT.ok,
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
      code: EXIT.failed,
      message: `attempt ${n} of ${config.relaunch.maxAttempts} failed (${e.code}); the next run after ${relaunch.nextAttemptAt} tries again`,
      error: errorJson(e),
    };
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
  return EXIT.partial;
}
