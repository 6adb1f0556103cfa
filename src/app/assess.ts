// The relaunch check's evidence, cheapest first: the Cloud TPU API (one read) or `sky status`, then rank 0's
// health, and only when something already looks wrong `sky status -r` and each rank's process. The
// decisions themselves are pure (core/relaunch.ts); this file only asks the probes it names.
import { nodesOfCluster } from "../adapters/tpu-api.js";
import { aliveCommand } from "../core/remote.js";
import type { Evidence, ProcessState, Verdict } from "../core/relaunch.js";
import { decide } from "../core/relaunch.js";
import type { DeploymentState } from "../core/state.js";
import { CloudApiError, InternalError } from "../errors.js";
import { type AppContext, throwIfAborted } from "./context.js";
import { skyRecord } from "./discover.js";
import { sessionsFor } from "./hosts.js";
import { probeRank0 } from "./probe.js";

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
  const h = await probeRank0(ctx, state.hosts, state.config.server.port, { generateTimeoutMs: 30_000 });
  return h.kind === "serving" ? "ok" : h.kind === "wedged" ? "failing" : "unreachable";
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
