// Spot relaunch decisions. Pure: what the evidence means (asking for one more probe until it is
// conclusive), when the next attempt may run, which zones to try first, spot or on-demand, and the
// attempt bookkeeping that survives between cron runs in the state file.
import type { Phase, RelaunchState } from "./state.js";

/** no-scheduler: the main process runs but its scheduler child is gone (the rank serves nothing). */
export type ProcessState = "running" | "dead" | "no-scheduler" | "unreachable" | "not started";
/**
 * What `sky status` said of the cluster; `unavailable` when it could not be read at all. `initKind` and
 * `initReason`: newer SkyPilot's `init_kind` ("launching" | "unhealthy") and `init_status_reason` for an INIT
 * cluster (docs/upstream/skypilot-seams.md §1); absent on builds that do not send them.
 */
export type SkyView = { status: string; initKind?: string; initReason?: string } | "missing" | { unavailable: string };

export interface Evidence {
  /** The Cloud TPU API serves this slice (v6e, a project, a known zone and cluster name on the cloud). */
  apiServes: boolean;
  spot: boolean;
  phase: Phase;
  /** Hosts recorded in the state (0 when the servers were never started on this cluster). */
  hosts: number;
  /** When the servers were last started (ISO): the "still coming up" window starts here. */
  startedAt: string | undefined;
  readyTimeoutMs: number;
  now: Date;
  /** TPU7x: when the instance group's run_duration (tpu.maxRunHours) ends and Compute Engine deletes the VMs. */
  runDurationEndsAt?: string | undefined;
  // What the probes found; undefined = not asked yet.
  tpuNodes?: { name: string; state: string }[] | { unavailable: string };
  sky?: SkyView;
  skyRefreshed?: SkyView;
  health?: "ok" | "failing" | "no-listener" | "unreachable";
  processes?: ProcessState[];
  /** The health probe repeated over at least a minute (CONFIRM_WINDOW_MS): "ok" if any of them passed. */
  healthConfirmed?: "ok" | "failing";
}

export type Probe = "tpu-nodes" | "sky-status" | "sky-refresh" | "health" | "processes" | "health-confirm";
export type VerdictKind = "healthy" | "starting" | "servers-down" | "preempted" | "gone" | "unknown";
export interface Verdict {
  kind: VerdictKind;
  reason: string;
}
export type Decision = { kind: "probe"; probe: Probe } | { kind: "verdict"; verdict: Verdict };
/** hold: the state of the cloud could not be read or proven; nothing is done, and the run says why (exit 1). */
export type Action = "none" | "wait" | "restart" | "relaunch" | "hold";

/** How long a failing health probe must keep failing before servers that all run are restarted. */
export const CONFIRM_WINDOW_MS = 60_000;
export const CONFIRM_PROBES = 3;

// Only these mean the slice is gone and may be cleaned up and launched again (docs/upstream/tpu.md §4).
const LOST_NODE_STATES = new Set(["PREEMPTED", "TERMINATED"]);
// The Cloud TPU API is working on the node: wait for it.
const BUSY_NODE_STATES = new Set(["CREATING", "STARTING", "RESTARTING", "REPAIRING", "REIMAGING"]);

const probe = (p: Probe): Decision => ({ kind: "probe", probe: p });
const verdict = (kind: VerdictKind, reason: string): Decision => ({ kind: "verdict", verdict: { kind, reason } });

function shortNode(name: string): string {
  return name.split("/").at(-1) ?? name;
}

function unavailable(v: unknown): string | undefined {
  return typeof v === "object" && v !== null && "unavailable" in v ? String((v as { unavailable: unknown }).unavailable) : undefined;
}

/**
 * The next probe to run, or the verdict once the evidence is conclusive. A healthy deployment costs one
 * status read (TPU API where it serves the slice, else `sky status -v`) and one health probe. Fail safe:
 * a slice whose TPU node is READY is never relaunched, and what cannot be read or proven is acted on never
 * (verdict unknown → hold).
 */
export function decide(ev: Evidence): Decision {
  if (ev.apiServes) {
    if (ev.tpuNodes === undefined) return probe("tpu-nodes");
    const why = unavailable(ev.tpuNodes);
    if (why !== undefined) return verdict("unknown", `the Cloud TPU API could not be read (${why}); nothing is done until it can`);
    const nodes = Array.isArray(ev.tpuNodes) ? ev.tpuNodes : [];
    const lost = nodes.find((n) => LOST_NODE_STATES.has(n.state));
    if (lost) return verdict("preempted", `TPU node ${shortNode(lost.name)} is ${lost.state}`);
    if (nodes.length === 0) {
      // No node at all: SkyPilot must agree that the cluster is gone before anything is relaunched.
      if (ev.skyRefreshed === undefined) return probe("sky-refresh");
      const sky = ev.skyRefreshed;
      const skyWhy = unavailable(sky);
      if (skyWhy !== undefined) return verdict("unknown", `no TPU node of the cluster, and sky status -r could not be read (${skyWhy})`);
      if (sky === "missing") return lostVerdict(ev, "the Cloud TPU API and sky status -r");
      const view = sky as Exclude<SkyView, "missing" | { unavailable: string }>;
      if (view.status === "INIT" && view.initKind === "launching") return initVerdict(view);
      return verdict(
        "unknown",
        `no TPU node of the cluster in the Cloud TPU API, but sky status -r says ${(sky as { status: string }).status}`,
      );
    }
    const busy = nodes.find((n) => BUSY_NODE_STATES.has(n.state));
    if (busy) return verdict("starting", `TPU node ${shortNode(busy.name)} is ${busy.state}: waiting for the Cloud TPU API`);
    const odd = nodes.find((n) => n.state !== "READY");
    if (odd) return verdict("unknown", `TPU node ${shortNode(odd.name)} is ${odd.state}: not a preemption; check it in the console`);
    return onLiveSlice(ev);
  }
  // No Cloud TPU API (TPU7x, or no project): SkyPilot's view.
  if (ev.sky === undefined) return probe("sky-status");
  const first = ev.sky;
  if (unavailable(first) !== undefined) return verdict("unknown", `sky status could not be read (${unavailable(first)})`);
  if (first === "missing") return lostVerdict(ev, "sky status");
  if ((first as { status: string }).status === "UP") return onLiveSlice(ev);
  if (ev.skyRefreshed === undefined) return probe("sky-refresh");
  const sky = ev.skyRefreshed;
  if (unavailable(sky) !== undefined) return verdict("unknown", `sky status -r could not be read (${unavailable(sky)})`);
  if (sky === "missing") return lostVerdict(ev, "sky status -r");
  const view = sky as Exclude<SkyView, "missing" | { unavailable: string }>;
  if (view.status === "UP") return onLiveSlice(ev);
  return initVerdict(view);
}

/**
 * A cluster SkyPilot does not call UP, without the Cloud TPU API. Where SkyPilot says why it is INIT, a launch
 * still in progress (another run's, or SkyPilot's own retry) is left to finish; an abnormal one is named with
 * SkyPilot's reason. Neither is proof the slice is gone, so neither is relaunched (fail safe).
 */
function initVerdict(view: { status: string; initKind?: string; initReason?: string }): Decision {
  const reason = view.initReason ? ` (${view.initReason})` : "";
  if (view.status === "INIT" && view.initKind === "launching") {
    return verdict("starting", `SkyPilot reports the cluster still launching${reason}: waiting for it`);
  }
  if (view.status === "INIT" && view.initKind === "unhealthy") {
    return verdict(
      "unknown",
      `SkyPilot reports the cluster unhealthy${reason}; without the Cloud TPU API tpu-deploy cannot tell a lost host from a failed check, so nothing is done: look with \`sky status -r\`, or \`tpu-deploy down\` and \`up\` to replace it`,
    );
  }
  return verdict(
    "unknown",
    `sky status -r says ${view.status}: a host may be lost, or SkyPilot's own SSH check failed on a network blip; without the Cloud TPU API tpu-deploy cannot tell which, so nothing is done`,
  );
}

/** The slice is there (TPU node READY, or SkyPilot says UP): only the servers can be wrong. */
function onLiveSlice(ev: Evidence): Decision {
  if (ev.hosts === 0) return verdict("servers-down", "the slice is up but no servers were started on it");
  if (ev.health === undefined) return probe("health");
  if (ev.health === "ok") return verdict("healthy", "rank 0 answers /health_generate with 200");
  if (ev.processes === undefined) return probe("processes");
  const ranksWhere = (want: (p: ProcessState) => boolean) => ev.processes?.flatMap((p, rank) => (want(p) ? [rank] : [])) ?? [];
  const dead = ranksWhere((p) => p === "dead" || p === "not started");
  if (dead.length > 0) return verdict("servers-down", `the server of rank ${dead.join(", ")} is not running; the hosts are up`);
  // Early in a start the scheduler is not spawned yet; after that, a main process without one serves nothing.
  const starting = ev.phase === "starting" && withinStartWindow(ev);
  const noScheduler = starting ? [] : ranksWhere((p) => p === "no-scheduler");
  if (noScheduler.length > 0) {
    return verdict(
      "servers-down",
      `rank ${noScheduler.join(", ")} runs without its scheduler process (it died; the main process stays up)`,
    );
  }
  const unreachable = ranksWhere((p) => p === "unreachable");
  if (unreachable.length > 0) {
    // Without the Cloud TPU API, "UP" came from SkyPilot's cache (plain sky status does not refresh): ask it
    // to look again before calling this a network problem; VMs deleted at run_duration's end look like this.
    if (!ev.apiServes) {
      if (ev.skyRefreshed === undefined) return probe("sky-refresh");
      if (ev.skyRefreshed === "missing") return lostVerdict(ev, "sky status -r");
    }
    return verdict(
      "unknown",
      `rank ${unreachable.join(", ")} cannot be reached over SSH while the slice is up: a network problem, not a preemption`,
    );
  }
  if (ev.phase === "starting" && withinStartWindow(ev)) {
    return verdict("starting", "every rank is running and the start is within server.readyTimeout: still coming up");
  }
  // Every rank runs but rank 0 does not serve: a restart only after it keeps failing for a minute.
  if (ev.healthConfirmed === undefined) return probe("health-confirm");
  if (ev.healthConfirmed === "ok") return verdict("healthy", "rank 0 answered /health_generate again within a minute");
  return verdict(
    "servers-down",
    ev.health === "failing"
      ? `rank 0's /health_generate kept failing for ${CONFIRM_WINDOW_MS / 1000} s while every rank runs (engine wedged)`
      : `every rank runs but rank 0 did not answer for ${CONFIRM_WINDOW_MS / 1000} s`,
  );
}

function lostVerdict(ev: Evidence, where: string): Decision {
  const ends = ev.runDurationEndsAt ? Date.parse(ev.runDurationEndsAt) : Number.NaN;
  if (Number.isFinite(ends) && ev.now.getTime() >= ends) {
    // Compute Engine deletes Flex-start VMs when run_duration ends: capacity taken back, as a preemption.
    return verdict("preempted", `the cluster is gone from ${where}: its VMs reached tpu.maxRunHours (run_duration) and were deleted`);
  }
  return ev.spot
    ? verdict("preempted", `the cluster is gone from ${where} (preempted, or deleted)`)
    : verdict("gone", `the cluster is gone from ${where} (deleted outside tpu-deploy)`);
}

function withinStartWindow(ev: Evidence): boolean {
  const started = ev.startedAt ? Date.parse(ev.startedAt) : Number.NaN;
  return Number.isFinite(started) && ev.now.getTime() - started < ev.readyTimeoutMs;
}

export function actionFor(v: VerdictKind): Action {
  switch (v) {
    case "healthy":
      return "none";
    case "starting":
      return "wait";
    case "servers-down":
      return "restart";
    case "preempted":
    case "gone":
      return "relaunch";
    case "unknown":
      return "hold";
  }
}

export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
  factor: number;
  /** Fraction of the delay that jitter may take off (0 = none, 1 = full jitter). */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 60_000, maxMs: 30 * 60_000, factor: 2, jitter: 0.5 };

/** Delay after the n-th consecutive failure: exponential, capped, minus up to `jitter` of it (never above the cap). */
export function backoffMs(failures: number, policy: BackoffPolicy, random: () => number): number {
  const n = Math.max(1, failures);
  const raw = Math.min(policy.maxMs, policy.baseMs * policy.factor ** (n - 1));
  const r = Math.min(1, Math.max(0, random()));
  return Math.round(raw * (1 - policy.jitter * r));
}

export type Gate = { kind: "go" } | { kind: "backoff"; until: string } | { kind: "gave-up"; attempts: number };

export function gate(r: RelaunchState, now: Date): Gate {
  if (r.gaveUp) return { kind: "gave-up", attempts: r.attempts };
  if (r.nextAttemptAt && Date.parse(r.nextAttemptAt) > now.getTime()) return { kind: "backoff", until: r.nextAttemptAt };
  return { kind: "go" };
}

/** Spot unless the config says on-demand, or `onDemandAfter` spot attempts failed in this episode. */
export function chooseSpot(configSpot: boolean, spotFailures: number, onDemandAfter: number | undefined): boolean {
  if (!configSpot) return false;
  return onDemandAfter === undefined || spotFailures < onDemandAfter;
}

/** Zones whose clusters keep getting preempted young go last; otherwise the configured order. */
export function orderZones(zones: readonly string[], churn: Readonly<Record<string, number>>): string[] {
  return zones
    .map((zone, i) => ({ zone, i, score: churn[zone] ?? 0 }))
    .sort((a, b) => a.score - b.score || a.i - b.i)
    .map((z) => z.zone);
}

export const YOUNG_MS = 60 * 60_000;

/**
 * Records the first sight of a preemption in this episode (later runs of the same episode change
 * nothing). A cluster that served less than an hour raises its zone's churn; one that lived long lowers it.
 */
export function notePreemption(
  r: RelaunchState,
  seen: { zone: string | undefined; servedMs: number; now: Date },
): { relaunch: RelaunchState; first: boolean; young: boolean } {
  const young = seen.servedMs < YOUNG_MS;
  if (r.preemptedAt) return { relaunch: r, first: false, young };
  const churn = { ...r.churn };
  if (seen.zone) {
    const next = (churn[seen.zone] ?? 0) + (young ? 1 : -1);
    if (next > 0) churn[seen.zone] = next;
    else delete churn[seen.zone];
  }
  return { relaunch: { ...r, churn, preemptedAt: seen.now.toISOString() }, first: true, young };
}

export function beginAttempt(r: RelaunchState): RelaunchState {
  return { ...r, attempts: r.attempts + 1, nextAttemptAt: undefined };
}

export function attemptFailed(
  r: RelaunchState,
  f: { spot: boolean; now: Date; maxAttempts: number; policy: BackoffPolicy; random: () => number },
): RelaunchState {
  const gaveUp = r.attempts >= f.maxAttempts;
  return {
    ...r,
    spotFailures: r.spotFailures + (f.spot ? 1 : 0),
    gaveUp,
    nextAttemptAt: gaveUp ? undefined : new Date(f.now.getTime() + backoffMs(r.attempts, f.policy, f.random)).toISOString(),
  };
}

/** An interrupted attempt (Ctrl-C, SIGTERM) is not a failure: the next run goes again at once. */
export function attemptInterrupted(r: RelaunchState, attemptsBefore: number): RelaunchState {
  return { ...r, attempts: attemptsBefore, nextAttemptAt: undefined };
}

export function attemptSucceeded(r: RelaunchState): RelaunchState {
  return { ...r, attempts: 0, nextAttemptAt: undefined, gaveUp: false, spotFailures: 0, preemptedAt: undefined };
}

/** `relaunch --reset`: forget the attempts and the give-up; keep what was learnt about zones. */
export function resetRelaunch(r: RelaunchState): RelaunchState {
  return { ...r, attempts: 0, nextAttemptAt: undefined, gaveUp: false, spotFailures: 0 };
}

/** Whether the bookkeeping still says something went wrong (a healthy check then clears it). */
export function needsClearing(r: RelaunchState): boolean {
  return r.attempts > 0 || r.nextAttemptAt !== undefined || r.preemptedAt !== undefined || r.spotFailures > 0;
}
