// Waiting until a replica serves: rank 0's /health, then /health_generate 200 (the model answers), then
// /get_server_info agreeing with the plan; every rank's process is watched the whole time, so a crash
// fails the wait at once instead of at the deadline.
import type { HostSession } from "../adapters/ssh/session.js";
import { httpViaSsh } from "../adapters/ssh/http.js";
import { auditServerInfo } from "../core/audit.js";
import type { Config } from "../core/config.js";
import { formatDuration } from "../core/duration.js";
import { parseWatchEnd, remoteFiles, rendezvousDoneCommand, watchCommand } from "../core/remote.js";
import type { HostRecord } from "../core/state.js";
import { SshError } from "../errors.js";
import { OperationError } from "../errors.js";
import { type AppContext, interruptedFrom, sleep } from "./context.js";
import { indent, lastLogLines, sessionOf } from "./start.js";

export interface ReadyOptions {
  timeoutMs: number;
  apiKey?: string | undefined;
  onPhase?: (phase: string) => void;
}

export interface ReadyResult {
  serverInfo: Record<string, unknown>;
  phases: Record<string, number>;
}

/**
 * Waits until rank 0 serves: /health, then /health_generate 200, then /get_server_info agreeing with
 * the plan. Every rank's process is watched over SSH the whole time; if one exits, stop at once.
 */
export async function waitReady(
  ctx: AppContext,
  sessions: Map<string, HostSession>,
  config: Config,
  hosts: HostRecord[],
  opts: ReadyOptions,
): Promise<ReadyResult> {
  const rank0 = hosts.find((h) => h.rank === 0);
  if (!rank0) throw new OperationError("internal", "no rank 0");
  const started = Date.now();
  const phases: Record<string, number> = {};
  const mark = (p: string) => {
    if (phases[p] !== undefined) return;
    phases[p] = Date.now() - started;
    opts.onPhase?.(p);
  };
  const watchAbort = new AbortController();
  // Ends a request in flight (a /health_generate can wait 20 s on a dead scheduler) when a rank dies.
  const requestAbort = new AbortController();
  const stopWatch = () => {
    watchAbort.abort();
    requestAbort.abort();
  };
  ctx.signal.addEventListener("abort", stopWatch, { once: true });

  // One long-lived exec per rank that returns only when the server process exits.
  // A rank whose scheduler died while its main process lives on (it serves /health, never a generation) is a
  // crash too: the wait ends at once instead of at server.readyTimeout.
  const deaths: HostRecord[] = [];
  const schedulerOnly = new Set<HostRecord>();
  const died = new Promise<void>((resolve) => {
    for (const h of hosts) {
      if (!h.pgid) continue;
      sessionOf(sessions, h)
        .exec(watchCommand(h.pgid), { timeoutMs: opts.timeoutMs + 60_000, signal: watchAbort.signal })
        .then((r) => {
          const end = parseWatchEnd(r.stdout);
          if (watchAbort.signal.aborted || !end) return;
          if (end === "scheduler-exited") schedulerOnly.add(h);
          deaths.push(h);
          requestAbort.abort();
          resolve();
        })
        .catch(() => undefined);
    }
  });

  const s0 = sessionOf(sessions, rank0);
  const headers: Record<string, string> = opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {};
  const get = (path: string, timeoutMs: number) =>
    httpViaSsh(s0, rank0.internalIp, config.server.port, {
      path,
      timeoutMs,
      signal: requestAbort.signal,
      headers: path.startsWith("/health") ? {} : headers,
    });
  const deadline = started + opts.timeoutMs;
  try {
    mark("rendezvous");
    let healthy = false;
    let lastRendezvousCheck = 0;
    while (true) {
      if (deaths.length > 0) break;
      if (ctx.signal.aborted) throw interruptedFrom(ctx.signal);
      if (Date.now() > deadline) {
        const log = await lastLogLines(ctx, sessions, config, rank0, 20);
        throw new OperationError(
          "readiness_timeout",
          `the cluster did not serve within ${formatDuration(opts.timeoutMs)}; rank 0's last log lines:\n${indent(log)}`,
          {
            hint: "a cold start (download + compile) can take 30+ minutes: raise server.readyTimeout; if /health answers but /health_generate does not, the engine is wedged (tpu-deploy logs, tpu-deploy restart)",
          },
        );
      }
      if (config.topology.hosts > 1 && phases.loading === undefined && Date.now() - lastRendezvousCheck > 1000) {
        lastRendezvousCheck = Date.now();
        const r = await s0.exec(rendezvousDoneCommand(remoteFiles(config.name)), { timeoutMs: 10_000 }).catch(() => undefined);
        if (r?.stdout.includes("yes")) mark("loading");
      }
      try {
        if (!healthy) {
          const h = await get("/health", 3000);
          if (h.status === 200) {
            healthy = true;
            mark("loading");
            mark("warmup");
          }
        }
        if (healthy) {
          // /health_generate can take long while the engine warms up: a generous per-request timeout.
          const hg = await get("/health_generate", 150_000);
          if (hg.status === 200) break;
        }
      } catch (err) {
        if (deaths.length > 0) break;
        if (!(err instanceof SshError)) throw err;
        // connection refused: no listener yet (still starting); anything else is retried too
      }
      await Promise.race([sleep(250), died]);
    }
    if (deaths.length > 0) {
      // When one rank fails the others stop within moments, and any of them may be noticed first: wait a
      // little for the rest, then show every rank that exited, so the one that failed is always among them.
      await sleep(1000);
      const dead = [...deaths].sort((a, b) => a.rank - b.rank);
      const only = dead.length === 1 ? dead[0] : undefined;
      const how = (d: HostRecord) =>
        schedulerOnly.has(d)
          ? "lost its scheduler process during start (the main process stays up, serving nothing)"
          : "exited during start";
      if (only) {
        const log = await lastLogLines(ctx, sessions, config, only, 30);
        throw new OperationError(
          "server_crashed",
          `rank ${only.rank} (${only.sshAlias}) ${how(only)}; its last log lines:\n${indent(log)}`,
          {
            hint: `see everything with \`tpu-deploy logs ${config.name} --rank ${only.rank}\``,
          },
        );
      }
      const logs = await Promise.all(dead.map((d) => lastLogLines(ctx, sessions, config, d, 15)));
      const shown = dead
        .map((d, i) => `rank ${d.rank} (${d.sshAlias})${schedulerOnly.has(d) ? ", scheduler process gone" : ""}:\n${indent(logs[i] ?? "")}`)
        .join("\n");
      throw new OperationError(
        "server_crashed",
        `ranks ${dead.map((d) => d.rank).join(", ")} exited during start (when one fails, the others stop with it); their last log lines:\n${indent(shown)}`,
        { hint: `see everything with \`tpu-deploy logs ${config.name} --rank all\`` },
      );
    }
    // Retried briefly: a single refused channel right after the first 200 is not worth failing a cold start for.
    let info: Awaited<ReturnType<typeof get>> | undefined;
    for (let attempt = 0; !info; attempt++) {
      try {
        info = await get("/get_server_info", 30_000);
      } catch (err) {
        if (!(err instanceof SshError) || attempt >= 4 || ctx.signal.aborted) throw err;
        await sleep(500, ctx.signal);
      }
    }
    const rank0Dist = config.topology.hosts > 1 ? `${rank0.internalIp}:${config.server.distPort}` : undefined;
    const audit = auditServerInfo(info.status, info.body, {
      nnodes: config.topology.hosts,
      tpSize: config.server.tpSize,
      distInitAddr: rank0Dist,
    });
    const mismatches = audit.mismatches;
    const serverInfo = audit.info;
    if (mismatches.length > 0) {
      throw new OperationError("readiness_timeout", `rank 0 serves but disagrees with the plan: ${mismatches.join(", ")}`, {
        hint: "another server may be answering on that port; run tpu-deploy restart",
      });
    }
    mark("serving");
    return { serverInfo, phases };
  } finally {
    ctx.signal.removeEventListener("abort", stopWatch);
    watchAbort.abort();
  }
}
