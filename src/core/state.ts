// What tpu-deploy records about a deployment (state.json). Secret names only, never values. Pure: the
// file's text is checked here (zod) where it enters the program, so a damaged file is a clear error.
import { z } from "zod";
import type { Config } from "./config.js";

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
  /** Process group of the server (= pid of its session leader) and the leader's start time. */
  pgid?: number | undefined;
  startTime?: string | undefined;
}

export interface HistoryEvent {
  at: string;
  event: string;
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

export interface DeploymentState {
  version: 1;
  name: string;
  config: Config;
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
  history: HistoryEvent[];
  relaunch: RelaunchState;
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

/** What needs a new cluster when it changes. */
export function resourcesKey(c: Config): string {
  return canonical({
    generation: c.tpu.generation,
    accelerator: c.tpu.accelerator,
    hosts: c.topology.hosts,
    slices: c.topology.slices,
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

export function newState(config: Config): DeploymentState {
  return {
    version: 1,
    name: config.name,
    config,
    phase: "launching",
    spot: config.tpu.spot,
    hosts: [],
    timings: {},
    history: [],
    relaunch: { attempts: 0, blocked: {}, churn: {}, spotFailures: 0 },
  };
}

export function addEvent(state: DeploymentState, event: Omit<HistoryEvent, "at">, now: Date): DeploymentState {
  const history = [...state.history, { at: now.toISOString(), ...event }].slice(-200);
  return { ...state, history };
}

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
  pgid: z.number().int().positive().optional(),
  startTime: z.string().optional(),
});

const historyEvent = z.object({
  at: z.string(),
  event: z.string(),
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

// The resolved config as recorded: the fields every command reads are checked; the rest is the same object.
const recordedConfig = z.looseObject({
  name: z.string(),
  tpu: z.looseObject({ generation: z.string(), accelerator: z.string(), zones: z.array(z.string()), spot: z.boolean() }),
  topology: z.looseObject({ hosts: z.number(), slices: z.number() }),
  server: z.looseObject({ port: z.number(), distPort: z.number(), secrets: z.array(z.string()) }),
});

const stateSchema = z.object({
  version: z.literal(1),
  name: z.string(),
  config: recordedConfig,
  phase: z.enum(["launching", "launched", "starting", "serving", "failed", "stopped"]),
  zone: z.string().optional(),
  spot: z.boolean(),
  nameOnCloud: z.string().optional(),
  hosts: z.array(hostRecord),
  distInitAddr: z.string().optional(),
  launchedAt: z.string().optional(),
  servingSince: z.string().optional(),
  timings: z.record(z.string(), z.number()),
  lastError: z.object({ code: z.string(), message: z.string() }).optional(),
  history: z.array(historyEvent),
  relaunch: relaunchState,
  updatedAt: z.string().optional(),
});

export type ParsedState = { ok: true; state: DeploymentState } | { ok: false; why: string };

/** state.json's text → a DeploymentState, or why it is not one. */
export function parseState(text: string): ParsedState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, why: `not JSON: ${(err as Error).message}` };
  }
  const r = stateSchema.safeParse(raw);
  if (!r.success) {
    const first = r.error.issues.slice(0, 3).map((i) => `${i.path.join(".") || "(top)"}: ${i.message}`);
    return { ok: false, why: first.join("; ") };
  }
  // The file's own object, now known to have this shape: zod's copy would reorder the config's keys.
  return { ok: true, state: raw as DeploymentState };
}
