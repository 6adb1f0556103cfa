// `tpu-deploy status`: per deployment and per replica, the recorded state, the live cluster (sky status -v
// -o json), the TPU node state where the API serves it, each rank's process and rank 0's health.
import { nodesOfCluster } from "../adapters/tpu-api.js";
import { aliveCommand, parseAlive } from "../core/remote.js";
import { type DeploymentState, type HistoryEvent, overallPhase, type ReplicaState } from "../core/state.js";
import { CloudApiError, TpuDeployError } from "../errors.js";
import { type AppContext, settleEach } from "./context.js";
import { isHostKeyChange } from "./host-keys.js";
import { sessionsFor } from "./hosts.js";
import { probeRank0 } from "./probe.js";
import type { SkyClusterRecord } from "../adapters/sky.js";

/** degraded: some replicas serve, not all (deployment level only). */
export type Health = "serving" | "degraded" | "wedged" | "starting" | "down" | "unknown";

export interface ReplicaStatus {
  replica: number;
  cluster: string;
  /** In one word: serving, starting, preempted, relaunching, failed, down, wedged, unknown. */
  status: string;
  phase: string;
  zone: string | null;
  spot: boolean;
  /** When it reached its status (serving since, or the last event about it). */
  since: string | null;
  /** initKind/initReason: newer SkyPilot's init_kind and init_status_reason for an INIT cluster, else null. */
  sky: { status: string | null; nameOnCloud: string | null; initKind: string | null; initReason: string | null };
  tpuNodes: { name: string; state: string }[] | null;
  hosts: {
    rank: number;
    sshHost: string;
    internalIp: string;
    externalIp: string;
    /** no-scheduler: the main process runs, its scheduler child is gone. */
    process: "running" | "dead" | "no-scheduler" | "unreachable" | "not started";
  }[];
  health: Health;
  uptimeSeconds: number | null;
  lastError: { code: string; message: string } | null;
  /** Hosts that offered a key other than the pinned one: not talked to, and the command fails. */
  hostKeysChanged: { code: string; message: string; hint?: string } | null;
  legacyLayout?: string;
}

export interface DeploymentStatus extends Omit<ReplicaStatus, "replica" | "cluster" | "status" | "since" | "legacyLayout"> {
  name: string;
  layout: string;
  accelerator: string;
  /** "2/2 replicas serving". */
  summary: string;
  replicas: ReplicaStatus[];
  preemptions: number;
  relaunches: number;
  history: HistoryEvent[];
  // Replica 0's, at the top as before replicas.
  cluster: ReplicaStatus["sky"];
}

export async function statusOf(ctx: AppContext, states: DeploymentState[]): Promise<DeploymentStatus[]> {
  if (states.length === 0) return [];
  const sky = await ctx.sky();
  const records = await sky.status(
    states.flatMap((s) => s.replicas.map((r) => r.cluster)),
    { verbose: true, signal: ctx.signal },
  );
  const results = await settleEach(states, 4, async (state) => {
    const replicas = await Promise.all(
      state.replicas.map((r) =>
        replicaStatus(
          ctx,
          state,
          r,
          records.find((x) => x.name === r.cluster),
        ),
      ),
    );
    return deploymentStatus(state, replicas);
  });
  return results.map((r, i) => {
    if (r.status === "fulfilled") return r.value;
    const s = states[i] as DeploymentState;
    return { ...deploymentStatus(s, []), lastError: { code: "status_failed", message: (r.reason as Error).message } };
  });
}

async function replicaStatus(
  ctx: AppContext,
  state: DeploymentState,
  r: ReplicaState,
  rec: SkyClusterRecord | undefined,
): Promise<ReplicaStatus> {
  const config = state.config;
  let tpuNodes: ReplicaStatus["tpuNodes"] = null;
  const nameOnCloud = rec?.cluster_name_on_cloud ?? r.nameOnCloud ?? null;
  if (config.tpu.generation === "v6e" && config.tpu.project && r.zone && nameOnCloud) {
    try {
      const api = await ctx.tpuApi();
      tpuNodes = nodesOfCluster(await api.listNodes(config.tpu.project, r.zone), nameOnCloud).map((n) => ({
        name: n.name,
        state: n.state,
      }));
    } catch (err) {
      if (!(err instanceof CloudApiError)) throw err;
    }
  }
  const hosts: ReplicaStatus["hosts"] = r.hosts.map((h) => ({
    rank: h.rank,
    sshHost: h.sshAlias,
    internalIp: h.internalIp,
    externalIp: h.externalIp,
    process: h.pgid ? "unreachable" : "not started",
  }));
  let health: Health = rec ? "unknown" : "down";
  let hostKeysChanged: ReplicaStatus["hostKeysChanged"] = null;
  if (rec?.status === "UP" && r.hosts.length > 0) {
    try {
      health = await liveHealth(ctx, state, r, hosts);
    } catch (err) {
      // No host of the replica is asked anything once one fails its key check: it shows as recorded, and why.
      if (!isHostKeyChange(err) || !(err instanceof TpuDeployError)) throw err;
      hostKeysChanged = { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) };
    }
  }
  const since = r.servingSince ? Date.parse(r.servingSince) : Number.NaN;
  const lastAbout = state.history.findLast((e) => (e.replica ?? 0) === r.replica);
  const preempted = tpuNodes?.some((n) => n.state === "PREEMPTED" || n.state === "TERMINATED") || (!rec && r.spot && r.hosts.length > 0);
  const status =
    health === "serving"
      ? "serving"
      : preempted
        ? "preempted"
        : r.relaunch.attempts > 0 && !r.relaunch.gaveUp
          ? "relaunching"
          : r.phase === "failed" || r.relaunch.gaveUp
            ? "failed"
            : health === "wedged"
              ? "wedged"
              : health === "starting" || r.phase === "launching" || r.phase === "launched" || r.phase === "starting"
                ? "starting"
                : health;
  return {
    replica: r.replica,
    cluster: r.cluster,
    status,
    phase: r.phase,
    zone: r.zone ?? null,
    spot: r.spot,
    since: status === "serving" ? (r.servingSince ?? null) : (lastAbout?.at ?? null),
    sky: { status: rec?.status ?? null, nameOnCloud, initKind: rec?.init_kind ?? null, initReason: rec?.init_status_reason ?? null },
    tpuNodes,
    hosts,
    health,
    uptimeSeconds: health === "serving" && Number.isFinite(since) ? Math.round((ctx.now().getTime() - since) / 1000) : null,
    lastError: r.lastError ?? null,
    hostKeysChanged,
    ...(r.legacyLayout ? { legacyLayout: r.legacyLayout } : {}),
  };
}

/** Each rank's process (into the rows) and rank 0's health, over SSH, every host's key checked first. */
async function liveHealth(ctx: AppContext, state: DeploymentState, r: ReplicaState, rows: ReplicaStatus["hosts"]): Promise<Health> {
  const hs = await sessionsFor(ctx, state.name, r.hosts, { timeoutMs: 10_000 });
  try {
    await Promise.all(
      r.hosts.map(async (h, i) => {
        const s = hs.sessions.get(h.sshAlias);
        const row = rows[i];
        if (!s || !h.pgid || !row) return;
        const x = await s.exec(aliveCommand(h.pgid), { timeoutMs: 10_000 }).catch(() => undefined);
        const alive = x ? parseAlive(x.stdout) : undefined;
        row.process = !x ? "unreachable" : alive === "alive" ? "running" : alive === "no-scheduler" ? "no-scheduler" : "dead";
      }),
    );
  } finally {
    await hs.close();
  }
  // hs.hosts: with any key just trusted on first use, so rank 0 is checked against it, not trusted again.
  const p = await probeRank0(ctx, state.name, hs.hosts, state.config.server.port, { generateTimeoutMs: 30_000, connectTimeoutMs: 10_000 });
  if (p.kind === "serving") return "serving";
  if (p.kind === "wedged") return "wedged";
  return rows.some((x) => x.process === "running") ? "starting" : "down";
}

/** The deployment's host key failures, from every replica: one entry for status to fail on. */
function hostKeysChangedOf(replicas: readonly ReplicaStatus[]): ReplicaStatus["hostKeysChanged"] {
  const changed = replicas.flatMap((r) => (r.hostKeysChanged ? [{ replica: r, error: r.hostKeysChanged }] : []));
  const first = changed[0];
  if (!first) return null;
  const message =
    replicas.length === 1
      ? first.error.message
      : changed.map((c) => `replica ${c.replica.replica} (${c.replica.cluster}): ${c.error.message}`).join("\n");
  return { code: first.error.code, message, ...(first.error.hint ? { hint: first.error.hint } : {}) };
}

function deploymentStatus(state: DeploymentState, replicas: ReplicaStatus[]): DeploymentStatus {
  const first = replicas[0];
  const serving = replicas.filter((r) => r.status === "serving").length;
  return {
    name: state.name,
    layout: state.config.topology.layout,
    accelerator: state.config.tpu.accelerator,
    summary: `${serving}/${replicas.length} replica${replicas.length === 1 ? "" : "s"} serving`,
    replicas,
    phase: overallPhase(state),
    zone: first?.zone ?? null,
    spot: first?.spot ?? state.config.tpu.spot,
    sky: first?.sky ?? { status: null, nameOnCloud: null, initKind: null, initReason: null },
    cluster: first?.sky ?? { status: null, nameOnCloud: null, initKind: null, initReason: null },
    tpuNodes: first?.tpuNodes ?? null,
    hosts: first?.hosts ?? [],
    health:
      replicas.length === 1
        ? (first?.health ?? "unknown")
        : serving === replicas.length && serving > 0
          ? "serving"
          : serving > 0
            ? "degraded"
            : (first?.health ?? "unknown"),
    uptimeSeconds: first?.uptimeSeconds ?? null,
    preemptions: state.history.filter((e) => e.event === "preempted").length,
    relaunches: state.history.filter((e) => e.event === "relaunched").length,
    lastError: state.lastError ?? first?.lastError ?? null,
    hostKeysChanged: hostKeysChangedOf(replicas),
    history: state.history.slice(-20),
  };
}
