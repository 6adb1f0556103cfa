// `tpu-deploy status`: every deployment's recorded state, the live cluster (sky status -v -o json), the TPU
// node state where the API serves it, each rank's process and rank 0's health.
import { httpViaSsh } from "../adapters/ssh/http.js";
import { nodesOfCluster } from "../adapters/tpu-api.js";
import { aliveCommand } from "../core/remote.js";
import type { DeploymentState, HistoryEvent } from "../core/state.js";
import { CloudApiError } from "../errors.js";
import { type AppContext, mapLimit } from "./context.js";
import { sessionsFor } from "./hosts.js";

export interface DeploymentStatus {
  name: string;
  phase: string;
  zone: string | null;
  spot: boolean;
  accelerator: string;
  cluster: { status: string | null; nameOnCloud: string | null };
  tpuNodes: { name: string; state: string }[] | null;
  hosts: {
    rank: number;
    sshHost: string;
    internalIp: string;
    externalIp: string;
    process: "running" | "dead" | "unreachable" | "not started";
  }[];
  health: "serving" | "wedged" | "starting" | "down" | "unknown";
  uptimeSeconds: number | null;
  preemptions: number;
  relaunches: number;
  lastError: { code: string; message: string } | null;
  history: HistoryEvent[];
}

export async function statusOf(ctx: AppContext, states: DeploymentState[]): Promise<DeploymentStatus[]> {
  if (states.length === 0) return [];
  const sky = await ctx.sky();
  const records = await sky.status(
    states.map((s) => s.name),
    { verbose: true, env: ctx.env, signal: ctx.signal },
  );
  const results = await mapLimit(states, 4, async (state) => {
    const rec = records.find((r) => r.name === state.name);
    const config = state.config;
    let tpuNodes: DeploymentStatus["tpuNodes"] = null;
    const nameOnCloud = rec?.cluster_name_on_cloud ?? state.nameOnCloud ?? null;
    if (config.tpu.generation === "v6e" && config.tpu.project && state.zone && nameOnCloud) {
      try {
        const api = await ctx.tpuApi();
        tpuNodes = nodesOfCluster(await api.listNodes(config.tpu.project, state.zone), nameOnCloud).map((n) => ({
          name: n.name,
          state: n.state,
        }));
      } catch (err) {
        if (!(err instanceof CloudApiError)) throw err;
      }
    }
    const hosts: DeploymentStatus["hosts"] = state.hosts.map((h) => ({
      rank: h.rank,
      sshHost: h.sshAlias,
      internalIp: h.internalIp,
      externalIp: h.externalIp,
      process: h.pgid ? "unreachable" : "not started",
    }));
    let health: DeploymentStatus["health"] = rec ? "unknown" : "down";
    if (rec?.status === "UP" && state.hosts.length > 0) {
      const hs = await sessionsFor(ctx, state.hosts, 10_000);
      try {
        await Promise.all(
          state.hosts.map(async (h, i) => {
            const s = hs.sessions.get(h.sshAlias);
            const row = hosts[i];
            if (!s || !h.pgid || !row) return;
            const r = await s.exec(aliveCommand(h.pgid), { timeoutMs: 10_000 }).catch(() => undefined);
            row.process = r?.stdout.includes("alive") ? "running" : r ? "dead" : "unreachable";
          }),
        );
        const rank0 = state.hosts.find((h) => h.rank === 0);
        const s0 = rank0 && hs.sessions.get(rank0.sshAlias);
        if (rank0 && s0) {
          health = "starting";
          try {
            const h = await httpViaSsh(s0, rank0.internalIp, config.server.port, { path: "/health", timeoutMs: 5000 });
            if (h.status === 200) {
              const hg = await httpViaSsh(s0, rank0.internalIp, config.server.port, { path: "/health_generate", timeoutMs: 30_000 });
              health = hg.status === 200 ? "serving" : "wedged";
            }
          } catch {
            health = hosts.some((h) => h.process === "running") ? "starting" : "down";
          }
        }
      } finally {
        await hs.close();
      }
    }
    const since = state.servingSince ? Date.parse(state.servingSince) : Number.NaN;
    return {
      name: state.name,
      phase: state.phase,
      zone: state.zone ?? null,
      spot: state.spot,
      accelerator: `${config.topology.slices > 1 ? `${config.topology.slices} x ` : ""}${config.tpu.accelerator}`,
      cluster: { status: rec?.status ?? null, nameOnCloud },
      tpuNodes,
      hosts,
      health,
      uptimeSeconds: health === "serving" && Number.isFinite(since) ? Math.round((ctx.now().getTime() - since) / 1000) : null,
      preemptions: state.history.filter((e) => e.event === "preempted").length,
      relaunches: state.history.filter((e) => e.event === "relaunched").length,
      lastError: state.lastError ?? null,
      history: state.history.slice(-20),
    } satisfies DeploymentStatus;
  });
  return results.map((r, i) => {
    if (r.status === "fulfilled") return r.value;
    const s = states[i] as DeploymentState;
    return {
      name: s.name,
      phase: s.phase,
      zone: s.zone ?? null,
      spot: s.spot,
      accelerator: s.config.tpu.accelerator,
      cluster: { status: null, nameOnCloud: s.nameOnCloud ?? null },
      tpuNodes: null,
      hosts: [],
      health: "unknown",
      uptimeSeconds: null,
      preemptions: 0,
      relaunches: 0,
      lastError: { code: "status_failed", message: (r.reason as Error).message },
      history: s.history.slice(-20),
    };
  });
}
