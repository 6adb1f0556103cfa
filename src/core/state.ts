// What tpu-deploy records about a deployment (state.json): the spec it was made from (the config in the form
// a user writes it; the resolved Config is derived from it on every read) and, per replica, its SkyPilot
// cluster, hosts, servers and relaunch bookkeeping. Secret names only, never values. Pure: the file's text
// is checked here (zod) where it enters the program, and states of the earlier format are converted.
// Long because it holds the file's schema, the v1 reader and the pure updates together: one format, one file.
import { z } from "zod";
import type { Config } from "./config.js";
import type { HostKey, HostKeySource } from "./host-keys.js";

export type Phase =
  | "launching" // sky launch under way (or interrupted while under way)
  | "launched" // sky launch finished: hosts exist and setup ran
  | "starting" // servers being started / waiting for readiness
  | "serving" // rank 0 answered /health_generate
  | "failed" // the last up/relaunch failed; see lastError
  | "stopped"; // servers stopped on purpose

export interface HostRecord {
  rank: number;
  slice: number;
  workerId: number;
  sshAlias: string;
  externalIp: string;
  internalIp: string;
  user: string;
  port: number;
  identityFile: string;
  /** SkyPilot's ProxyCommand for the host, when its config has one. */
  proxyCommand?: string | undefined;
  /**
   * The host's SSH host keys: every later connection must be offered one of them. Absent in states written
   * before tpu-deploy pinned keys: the next connection trusts the key offered on first use and pins it.
   */
  hostKeys?: HostKey[] | undefined;
  hostKeysFrom?: HostKeySource | undefined;
  /** Process group of the server (= pid of its session leader) and the leader's start time. */
  pgid?: number | undefined;
  startTime?: string | undefined;
}

export interface HistoryEvent {
  at: string;
  event: string;
  /** Which replica it happened to (absent: the deployment as a whole). */
  replica?: number | undefined;
  zone?: string | undefined;
  attempt?: number | undefined;
  detail?: string | undefined;
  durationMs?: number | undefined;
}

export interface RelaunchState {
  attempts: number;
  nextAttemptAt?: string | undefined;
  gaveUp?: boolean | undefined;
  /** zone or region → ISO time until which it is not tried. */
  blocked: Record<string, string>;
  /** zone → recent preemptions of young clusters. */
  churn: Record<string, number>;
  spotFailures: number;
  preemptedAt?: string | undefined;
}

export interface ReplicaState {
  replica: number;
  /** Its SkyPilot cluster. */
  cluster: string;
  phase: Phase;
  zone?: string | undefined;
  spot: boolean;
  nameOnCloud?: string | undefined;
  hosts: HostRecord[];
  distInitAddr?: string | undefined;
  launchedAt?: string | undefined;
  servingSince?: string | undefined;
  timings: Record<string, number>;
  lastError?: { code: string; message: string } | undefined;
  relaunch: RelaunchState;
  /** Set for a cluster an earlier version made as several slices joined into one model: it needs --recreate. */
  legacyLayout?: string | undefined;
}

export interface DeploymentState {
  version: 2;
  name: string;
  /** The config as a user writes it (tpu-deploy.yaml's shape), explicit: what `config` is resolved from. */
  spec: Record<string, unknown>;
  /** Derived from spec when the state is read; never written. */
  config: Config;
  replicas: ReplicaState[];
  history: HistoryEvent[];
  lastError?: { code: string; message: string } | undefined;
  updatedAt?: string | undefined;
}

/** JSON with every object's keys sorted: equal for equal content, whatever order the keys were written in. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === "object" && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : x,
  );
}

/** What needs a new cluster when it changes (per replica: the number of replicas is not in it). */
export function resourcesKey(c: Config): string {
  return canonical({
    generation: c.tpu.generation,
    accelerator: c.tpu.accelerator,
    hosts: c.topology.hosts,
    project: c.tpu.project,
    runtime: c.tpu.runtimeVersion,
    public: c.server.public,
    sglang: c.sglang,
  });
}

/** What only needs the servers restarted when it changes. */
export function serverKey(c: Config): string {
  return canonical({ model: c.model, server: { ...c.server, readyTimeoutMs: undefined } });
}

/** Replica R's SkyPilot cluster: the deployment's name for replica 0 (as before replicas), `<name>-r<R>` after. */
export function clusterName(name: string, replica: number): string {
  return replica === 0 ? name : `${name}-r${replica}`;
}

export function newRelaunchState(): RelaunchState {
  return { attempts: 0, blocked: {}, churn: {}, spotFailures: 0 };
}

export function newReplica(name: string, replica: number, spot: boolean): ReplicaState {
  return { replica, cluster: clusterName(name, replica), phase: "launching", spot, hosts: [], timings: {}, relaunch: newRelaunchState() };
}

export function newState(config: Config, spec: Record<string, unknown>): DeploymentState {
  return {
    version: 2,
    name: config.name,
    spec,
    config,
    replicas: Array.from({ length: config.replicas }, (_, i) => newReplica(config.name, i, config.tpu.spot)),
    history: [],
  };
}

/**
 * `next`, with the host keys the file on disk pinned (on first use, by a command that does not hold the
 * lock) for hosts that `next` knows in the same replica at the same address but without keys: a writer
 * holding an older copy of the state must not silently undo a pin, whichever replica it was made in. Keys
 * `next` carries itself always win.
 */
export function keepPinnedHostKeys<S extends Pick<DeploymentState, "replicas">>(
  onDisk: Pick<DeploymentState, "replicas"> | undefined,
  next: S,
): S {
  const key = (replica: number, h: HostRecord) => `${replica}\0${hostIdentity(h)}`;
  const pinned = new Map(
    (onDisk?.replicas ?? []).flatMap((r) => r.hosts.flatMap((h) => (h.hostKeys?.length ? [[key(r.replica, h), h] as const] : []))),
  );
  if (pinned.size === 0) return next;
  let changed = false;
  const replicas = next.replicas.map((r) => {
    let touched = false;
    const hosts = r.hosts.map((h) => {
      const old = h.hostKeys?.length ? undefined : pinned.get(key(r.replica, h));
      if (!old) return h;
      touched = true;
      return { ...h, hostKeys: old.hostKeys, hostKeysFrom: old.hostKeysFrom };
    });
    if (!touched) return r;
    changed = true;
    return { ...r, hosts };
  });
  return changed ? { ...next, replicas } : next;
}

/** One host across state files: the same SSH alias at the same address and port. */
export function hostIdentity(h: Pick<HostRecord, "sshAlias" | "externalIp" | "port">): string {
  return `${h.sshAlias}\0${h.externalIp}\0${h.port}`;
}

export function addEvent(state: DeploymentState, event: Omit<HistoryEvent, "at">, now: Date): DeploymentState {
  const history = [...state.history, { at: now.toISOString(), ...event }].slice(-200);
  return { ...state, history };
}

/** The state with replica R replaced by fn(replica R). */
export function withReplica(state: DeploymentState, replica: number, fn: (r: ReplicaState) => ReplicaState): DeploymentState {
  return { ...state, replicas: state.replicas.map((r) => (r.replica === replica ? fn(r) : r)) };
}

/** The phase of the deployment as a whole: serving when every replica serves; the least advanced otherwise. */
export function overallPhase(state: DeploymentState): Phase {
  const order: Phase[] = ["failed", "launching", "launched", "starting", "stopped", "serving"];
  let worst: Phase = "serving";
  for (const r of state.replicas) if (order.indexOf(r.phase) < order.indexOf(worst)) worst = r.phase;
  return state.replicas.length === 0 ? "launching" : worst;
}

// --- the file ---

const hostRecord = z.object({
  rank: z.number().int().nonnegative(),
  slice: z.number().int().nonnegative(),
  workerId: z.number().int().nonnegative(),
  sshAlias: z.string(),
  externalIp: z.string(),
  internalIp: z.string(),
  user: z.string(),
  port: z.number().int(),
  identityFile: z.string(),
  proxyCommand: z.string().optional(),
  hostKeys: z.array(z.object({ type: z.string().min(1), key: z.string().min(1) })).optional(),
  hostKeysFrom: z.enum(["tpu-api", "first-use"]).optional(),
  pgid: z.number().int().positive().optional(),
  startTime: z.string().optional(),
});

const historyEvent = z.looseObject({
  at: z.string(),
  event: z.string(),
  replica: z.number().int().nonnegative().optional(),
  zone: z.string().optional(),
  attempt: z.number().optional(),
  detail: z.string().optional(),
  durationMs: z.number().optional(),
});

const relaunchState = z.object({
  attempts: z.number().int().nonnegative(),
  nextAttemptAt: z.string().optional(),
  gaveUp: z.boolean().optional(),
  blocked: z.record(z.string(), z.string()),
  churn: z.record(z.string(), z.number()),
  spotFailures: z.number().int().nonnegative(),
  preemptedAt: z.string().optional(),
});

const phase = z.enum(["launching", "launched", "starting", "serving", "failed", "stopped"]);
const lastError = z.object({ code: z.string(), message: z.string() });

const replicaState = z.object({
  replica: z.number().int().nonnegative(),
  cluster: z.string(),
  phase,
  zone: z.string().optional(),
  spot: z.boolean(),
  nameOnCloud: z.string().optional(),
  hosts: z.array(hostRecord),
  distInitAddr: z.string().optional(),
  launchedAt: z.string().optional(),
  servingSince: z.string().optional(),
  timings: z.record(z.string(), z.number()),
  lastError: lastError.optional(),
  relaunch: relaunchState,
  legacyLayout: z.string().optional(),
});

const stateV2 = z.object({
  version: z.literal(2),
  name: z.string(),
  spec: z.record(z.string(), z.unknown()),
  replicas: z.array(replicaState),
  history: z.array(historyEvent),
  lastError: lastError.optional(),
  updatedAt: z.string().optional(),
});

// The first format: one cluster, the resolved config kept whole.
const stateV1 = z.object({
  version: z.literal(1),
  name: z.string(),
  config: z.looseObject({
    name: z.string(),
    tpu: z.looseObject({}),
    topology: z.looseObject({ hosts: z.number(), slices: z.number() }),
  }),
  phase,
  zone: z.string().optional(),
  spot: z.boolean(),
  nameOnCloud: z.string().optional(),
  hosts: z.array(hostRecord),
  distInitAddr: z.string().optional(),
  launchedAt: z.string().optional(),
  servingSince: z.string().optional(),
  timings: z.record(z.string(), z.number()),
  lastError: lastError.optional(),
  history: z.array(historyEvent),
  relaunch: relaunchState,
  updatedAt: z.string().optional(),
});

/** A stored state before its config is resolved: everything but `config`. */
export type StoredState = Omit<DeploymentState, "config">;

export type ParsedState = { ok: true; state: StoredState } | { ok: false; why: string };

/** state.json's text → the stored state (any format, converted to the current one), or why it is not one. */
export function parseState(text: string): ParsedState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, why: `not JSON: ${(err as Error).message}` };
  }
  const version = (raw as { version?: unknown } | null)?.version;
  const r = version === 1 ? stateV1.safeParse(raw) : stateV2.safeParse(raw);
  if (!r.success) {
    const first = r.error.issues.slice(0, 3).map((i) => `${i.path.join(".") || "(top)"}: ${i.message}`);
    return { ok: false, why: first.join("; ") };
  }
  if (r.data.version === 2) return { ok: true, state: r.data as StoredState };
  return { ok: true, state: fromV1(r.data) };
}

/** What is written: the state without its derived config. */
export function serializeState(state: DeploymentState, now: Date): string {
  const { config: _derived, ...stored } = state;
  return `${JSON.stringify({ ...stored, updatedAt: now.toISOString() }, null, 2)}\n`;
}

type V1 = z.infer<typeof stateV1>;

// One cluster becomes replica 0. Several slices joined into one model (the old `--nodes 2` layout) is kept
// as it was, marked, so status, down and gc still find it and up asks for --recreate.
function fromV1(v1: V1): StoredState {
  const slices = v1.config.topology.slices;
  const accelerator = String(v1.config.tpu.accelerator ?? "");
  const replica: ReplicaState = {
    replica: 0,
    cluster: v1.name,
    phase: v1.phase,
    zone: v1.zone,
    spot: v1.spot,
    nameOnCloud: v1.nameOnCloud,
    hosts: v1.hosts,
    distInitAddr: v1.distInitAddr,
    launchedAt: v1.launchedAt,
    servingSince: v1.servingSince,
    timings: v1.timings,
    lastError: v1.lastError,
    relaunch: v1.relaunch,
    ...(slices > 1 ? { legacyLayout: `${slices} x ${accelerator} joined into one model (made before replicas)` } : {}),
  };
  return {
    version: 2,
    name: v1.name,
    spec: specFromV1Config(v1.config),
    replicas: [replica],
    history: v1.history,
    lastError: v1.lastError,
  };
}

/** The first format's resolved config, back in the form a user writes (durations in seconds). */
function specFromV1Config(c: Record<string, unknown>): Record<string, unknown> {
  const o = (v: unknown): Record<string, unknown> =>
    v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  const seconds = (ms: unknown) => (typeof ms === "number" ? ms / 1000 : undefined);
  const tpu = o(c.tpu);
  const topology = o(c.topology);
  const server = o(c.server);
  const launch = o(c.launch);
  const relaunch = o(c.relaunch);
  const prune = (x: Record<string, unknown>) => Object.fromEntries(Object.entries(x).filter(([, v]) => v !== undefined && v !== null));
  const apiKey = server.apiKeySecret;
  return prune({
    name: c.name,
    tpu: prune({
      generation: tpu.generation,
      accelerator: tpu.accelerator,
      // v1's nodes counted every host of every slice; one slice's hosts is what it means now.
      nodes: Number(topology.hosts) / Math.max(1, Number(topology.slices)),
      spot: tpu.spot,
      zones: tpu.zones,
      project: tpu.project,
      runtimeVersion: tpu.runtimeVersion,
      maxRunHours: tpu.maxRunHours,
    }),
    model: c.model,
    server: prune({
      port: server.port,
      distPort: server.distPort,
      args: server.args,
      env: server.env,
      secrets: Array.isArray(server.secrets) ? server.secrets.filter((s) => s !== apiKey) : undefined,
      secretsFile: server.secretsFile,
      apiKeySecret: apiKey,
      public: server.public,
      readyTimeout: seconds(server.readyTimeoutMs),
    }),
    sglang: c.sglang,
    launch: prune({ timeout: seconds(launch.timeoutMs), template: launch.template }),
    relaunch: prune({
      maxAttempts: relaunch.maxAttempts,
      onDemandAfter: relaunch.onDemandAfter,
      webhook: relaunch.webhook,
      backoff: seconds(relaunch.backoffMs),
      backoffMax: seconds(relaunch.backoffMaxMs),
    }),
  });
}
