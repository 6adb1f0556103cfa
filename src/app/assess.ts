// The relaunch check's evidence for one replica, cheapest first: the Cloud TPU API (one read) or `sky
// status`, then rank 0's health, and only when something already looks wrong `sky status -r`, each rank's
// process, and the health probe repeated over a minute. The decisions are pure (core/relaunch.ts); this
// file only asks the probes they name. A probe that cannot be answered is evidence too: "unavailable".
import { nodesOfCluster } from "../adapters/tpu-api.js";
import { CONFIRM_PROBES, CONFIRM_WINDOW_MS, decide, type Evidence, type ProcessState, type Verdict } from "../core/relaunch.js";
import { aliveCommand, parseAlive } from "../core/remote.js";
import type { DeploymentState, ReplicaState } from "../core/state.js";
import { CloudApiError, InternalError, TpuDeployError } from "../errors.js";
import { type AppContext, sleep, throwIfAborted } from "./context.js";
import { skyRecord } from "./discover.js";
import { sessionsFor } from "./hosts.js";
import { probeRank0 } from "./probe.js";

export async function assess(ctx: AppContext, state: DeploymentState, replica: ReplicaState): Promise<Verdict> {
  const config = state.config;
  const project = config.tpu.project;
  const ev: Evidence = {
    apiServes: config.tpu.generation === "v6e" && Boolean(project && replica.zone && replica.nameOnCloud),
    spot: replica.spot,
    phase: replica.phase,
    hosts: replica.hosts.length,
    startedAt: state.history.findLast((e) => e.event === "servers-started" && (e.replica ?? 0) === replica.replica)?.at,
    readyTimeoutMs: config.server.readyTimeoutMs,
    now: ctx.now(),
    runDurationEndsAt:
      config.tpu.generation === "v7" && replica.launchedAt
        ? new Date(Date.parse(replica.launchedAt) + config.tpu.maxRunHours * 3_600_000).toISOString()
        : undefined,
  };
  for (let step = 0; step < 10; step++) {
    const d = decide(ev);
    if (d.kind === "verdict") return d.verdict;
    ctx.report.debug(`relaunch ${replica.cluster}: probing ${d.probe}`);
    switch (d.probe) {
      case "tpu-nodes":
        ev.tpuNodes = await tpuNodes(ctx, project ?? "", replica.zone ?? "", replica.nameOnCloud ?? "");
        break;
      case "sky-status":
        ev.sky = await skyView(ctx, replica.cluster, false);
        break;
      case "sky-refresh":
        ev.skyRefreshed = await skyView(ctx, replica.cluster, true);
        break;
      case "health":
        ev.health = await probeHealth(ctx, state, replica);
        break;
      case "processes":
        ev.processes = await probeProcesses(ctx, state.name, replica);
        break;
      case "health-confirm":
        ev.healthConfirmed = await confirmFailing(ctx, state, replica);
        break;
    }
    throwIfAborted(ctx.signal);
  }
  throw new InternalError(`relaunch ${replica.cluster}: the evidence never became conclusive`);
}

async function tpuNodes(ctx: AppContext, project: string, zone: string, nameOnCloud: string): Promise<Evidence["tpuNodes"]> {
  try {
    const api = await ctx.tpuApi();
    return nodesOfCluster(await api.listNodes(project, zone), nameOnCloud).map((n) => ({ name: n.name, state: n.state }));
  } catch (err) {
    if (!(err instanceof CloudApiError)) throw err;
    return { unavailable: err.message.split("\n")[0] ?? err.message };
  }
}

async function skyView(ctx: AppContext, cluster: string, refresh: boolean): Promise<NonNullable<Evidence["sky"]>> {
  try {
    const rec = await skyRecord(ctx, cluster, { refresh });
    if (!rec) return "missing";
    return {
      status: rec.status,
      ...(rec.init_kind ? { initKind: rec.init_kind } : {}),
      ...(rec.init_status_reason ? { initReason: rec.init_status_reason } : {}),
    };
  } catch (err) {
    if (!(err instanceof TpuDeployError) || err.code === "interrupted") throw err;
    return { unavailable: err.message.split("\n")[0] ?? err.message };
  }
}

async function probeHealth(ctx: AppContext, state: DeploymentState, replica: ReplicaState): Promise<Evidence["health"]> {
  const h = await probeRank0(ctx, state.name, replica.hosts, state.config.server.port, { generateTimeoutMs: 30_000 });
  return h.kind === "serving" ? "ok" : h.kind === "wedged" ? "failing" : h.kind === "no-listener" ? "no-listener" : "unreachable";
}

/** Probes again, CONFIRM_PROBES times over CONFIRM_WINDOW_MS: "ok" if any answers, "failing" if none did. */
async function confirmFailing(ctx: AppContext, state: DeploymentState, replica: ReplicaState): Promise<"ok" | "failing"> {
  ctx.report.info(
    `${replica.cluster}: rank 0 does not serve while every rank runs; probing again for ${CONFIRM_WINDOW_MS / 1000} s before restarting`,
  );
  for (let i = 1; i <= CONFIRM_PROBES; i++) {
    await sleep(CONFIRM_WINDOW_MS / CONFIRM_PROBES, ctx.signal);
    if ((await probeHealth(ctx, state, replica)) === "ok") return "ok";
  }
  return "failing";
}

async function probeProcesses(ctx: AppContext, name: string, replica: ReplicaState): Promise<ProcessState[]> {
  const hosts = [...replica.hosts].sort((a, b) => a.rank - b.rank);
  const hs = await sessionsFor(ctx, name, hosts, { timeoutMs: 15_000 });
  try {
    return await Promise.all(
      hosts.map(async (h): Promise<ProcessState> => {
        const s = hs.sessions.get(h.sshAlias);
        if (!s) return "unreachable";
        if (!h.pgid) return "not started";
        const r = await s.exec(aliveCommand(h.pgid), { timeoutMs: 10_000, signal: ctx.signal }).catch(() => undefined);
        if (!r) return "unreachable";
        const alive = parseAlive(r.stdout);
        return alive === "alive" ? "running" : alive === "no-scheduler" ? "no-scheduler" : "dead";
      }),
    );
  } finally {
    await hs.close();
  }
}
