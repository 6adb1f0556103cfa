// What tpu-deploy records about a deployment (state.json). Secret names only, never values. Pure.
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

/** What needs a new cluster when it changes. */
export function resourcesKey(c: Config): string {
  return JSON.stringify({
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
  return JSON.stringify({ model: c.model, server: { ...c.server, readyTimeoutMs: undefined } });
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
