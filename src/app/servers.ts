// Starting, watching, checking and stopping sglang-jax on every host, in parallel over SSH.
import { httpViaSsh } from "../adapters/ssh/http.js";
import type { HostSession } from "../adapters/ssh/session.js";
import type { Config } from "../core/config.js";
import { formatDuration } from "../core/duration.js";
import { serverCommand, setupMarker, venvPython } from "../core/plan.js";
import type { RankedHost } from "../core/ranks.js";
import {
  MISSING_MARK,
  portConnectCommand,
  portListenCommand,
  remoteFiles,
  runScript,
  secretsEnvFile,
  installAndStartCommand,
  stopCommand,
  stopFromPidFileCommand,
  tailCommand,
  watchCommand,
} from "../core/remote.js";
import type { HostRecord } from "../core/state.js";
import { OperationError, PartialFailureError, SshError } from "../errors.js";
import { type AppContext, interruptedFrom, mapLimit, sleep } from "./context.js";

const CONCURRENCY = 32;

function session(sessions: Map<string, HostSession>, h: { sshAlias?: string; alias?: string }): HostSession {
  const alias = h.sshAlias ?? h.alias ?? "";
  const s = sessions.get(alias);
  if (!s) throw new OperationError("ssh_failed", `no SSH session to ${alias}`);
  return s;
}

export function toHostRecords(hosts: RankedHost[]): HostRecord[] {
  return hosts.map((h) => ({
    rank: h.rank,
    slice: h.slice,
    workerId: h.workerId,
    sshAlias: h.alias,
    externalIp: h.hostName,
    internalIp: h.internalIp,
    user: h.user,
    port: h.port,
    identityFile: h.identityFile,
  }));
}

/**
 * Stops what this tool started on the hosts, by recorded process group (or the host's pid file).
 * Not tied to the run's signal: a stop must finish even after Ctrl-C.
 */
export async function stopServers(
  sessions: Map<string, HostSession>,
  name: string,
  hosts: HostRecord[],
  graceSeconds = 10,
): Promise<string[]> {
  const files = remoteFiles(name);
  const results = await mapLimit(hosts, CONCURRENCY, async (h) => {
    const s = session(sessions, h);
    const cmd = h.pgid ? stopCommand(h.pgid, h.startTime, graceSeconds) : stopFromPidFileCommand(files, graceSeconds);
    const r = await s.exec(cmd, { timeoutMs: (graceSeconds + 15) * 1000 });
    return `rank ${h.rank}: ${r.stdout.trim() || r.stderr.trim()}`;
  });
  const failed = results.flatMap((r, i) => (r.status === "rejected" ? [`rank ${hosts[i]?.rank}: ${(r.reason as Error).message}`] : []));
  if (failed.length > 0) {
    throw new PartialFailureError(
      `could not stop the server on ${failed.length} host(s): ${failed.join("; ")}`,
      failed.map((f) => ({ target: f, ok: false })),
    );
  }
  return results.map((r) => (r.status === "fulfilled" ? r.value : ""));
}

/**
 * Proves the rendezvous ports are open before anything starts: a short-lived listener on rank 0's
 * internal address for P, P+5 and P+6, and a connection to each from every other rank.
 */
export async function checkPorts(
  ctx: AppContext,
  sessions: Map<string, HostSession>,
  hosts: HostRecord[],
  distPort: number,
): Promise<void> {
  const rank0 = hosts.find((h) => h.rank === 0);
  const others = hosts.filter((h) => h.rank !== 0);
  if (!rank0 || others.length === 0) return;
  const ports = [distPort, distPort + 5, distPort + 6];
  const listenSeconds = 30;
  const stopListener = new AbortController();
  const onAbort = () => stopListener.abort();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  // Connect only once every port is bound: a port tried before then is refused, and would be reported
  // as closed while a later one (tried after a dropped port's timeout) already answers.
  let heard = "";
  let markListening: () => void = () => undefined;
  const listening = new Promise<void>((resolve) => {
    markListening = resolve;
  });
  const listener = session(sessions, rank0).exec(portListenCommand(rank0.internalIp, ports, listenSeconds, others.length), {
    timeoutMs: (listenSeconds + 10) * 1000,
    signal: stopListener.signal,
    onStdout: (text) => {
      heard += text;
      if (/^listening$/m.test(heard)) markListening();
    },
  });
  let listenerDone = false;
  const listenerResult = listener.finally(() => {
    listenerDone = true;
  });
  await Promise.race([listening, listenerResult.catch(() => undefined)]);
  // Connectors retry while the listener starts; a port that times out is filtered, one refused is closed.
  const failures: string[] = [];
  const connectResults = await mapLimit(others, CONCURRENCY, async (h) => {
    const s = session(sessions, h);
    for (let attempt = 0; ; attempt++) {
      const r = await s.exec(portConnectCommand(rank0.internalIp, ports, 3), { timeoutMs: 30_000, signal: ctx.signal });
      const answer = JSON.parse(r.stdout.trim() || "{}") as Record<string, string>;
      const bad = Object.entries(answer).filter(([, v]) => v !== "ok");
      // All refused: the listener is not up yet. Some refused, some not: a firewall rejects them.
      const listenerNotUp = bad.length === ports.length && bad.every(([, v]) => /refused/i.test(v));
      if (bad.length === 0) return;
      if (!listenerNotUp || attempt >= 20 || listenerDone) {
        for (const [port, why] of bad) failures.push(`rank ${h.rank} (${h.internalIp}) → rank 0 ${rank0.internalIp}:${port}: ${why}`);
        return;
      }
      await sleep(250, ctx.signal);
    }
  });
  if (failures.length > 0 || connectResults.some((r) => r.status === "rejected")) stopListener.abort();
  const l = await listenerResult.catch(() => undefined);
  ctx.signal.removeEventListener("abort", onAbort);
  for (const r of connectResults) if (r.status === "rejected") throw r.reason;
  if (l && l.code !== 0 && /bind-failed/.test(l.stdout)) {
    throw new OperationError("port_blocked", `rank 0 cannot listen on its rendezvous port: ${l.stdout.trim()}`, {
      hint: "something else holds the port on rank 0; choose another --dist-port or stop it",
    });
  }
  if (failures.length > 0) {
    throw new OperationError("port_blocked", `rendezvous ports are not reachable between hosts:\n  ${failures.join("\n  ")}`, {
      hint: `open TCP ${ports.join(", ")} between the hosts (a VPC firewall rule for the cluster's network); sglang-jax would hang silently`,
    });
  }
}

export async function startServers(
  ctx: AppContext,
  sessions: Map<string, HostSession>,
  config: Config,
  hosts: HostRecord[],
  distInitAddr: string,
  secrets: Map<string, string>,
): Promise<HostRecord[]> {
  const files = remoteFiles(config.name);
  const secretsText = secretsEnvFile(secrets);
  const pre = { python: venvPython(config), marker: setupMarker(config) };
  const missing: { rank: number; host: string; kind: string; path: string }[] = [];
  const results = await mapLimit(hosts, CONCURRENCY, async (h) => {
    const s = session(sessions, h);
    const opts = { timeoutMs: 30_000, signal: ctx.signal };
    const script = runScript({
      files,
      argv: serverCommand(config, h.rank, distInitAddr).argv,
      env: config.server.env,
      apiKeySecret: config.server.apiKeySecret,
    });
    const r = await s.exec(installAndStartCommand(files, script, pre), { ...opts, stdin: secretsText });
    const miss = new RegExp(`^${MISSING_MARK} (python|marker) (.*)$`, "m").exec(r.stdout);
    if (r.code === 3 && miss) {
      missing.push({ rank: h.rank, host: h.sshAlias, kind: miss[1] ?? "", path: miss[2] ?? "" });
      return h;
    }
    const m = /^(\d+) (\d+)\s*$/.exec(r.stdout.trim());
    if (r.code !== 0 || !m) throw new Error(`start failed: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
    return { ...h, pgid: Number(m[1]), startTime: m[2] };
  });
  const failed = results.flatMap((r, i) => (r.status === "rejected" ? [`rank ${hosts[i]?.rank}: ${(r.reason as Error).message}`] : []));
  if (failed.length > 0) {
    if (ctx.signal.aborted) throw interruptedFrom(ctx.signal);
    throw new OperationError("ssh_failed", `could not start the server on ${failed.length} host(s):\n  ${failed.join("\n  ")}`);
  }
  if (missing.length > 0) throw missingPrerequisites(config, missing);
  return results.map((r) => (r as PromiseFulfilledResult<HostRecord>).value);
}

function missingPrerequisites(config: Config, missing: { rank: number; host: string; kind: string; path: string }[]): OperationError {
  const where = (kind: string) =>
    missing
      .filter((m) => m.kind === kind)
      .sort((a, b) => a.rank - b.rank)
      .map((m) => `rank ${m.rank} (${m.host}): ${m.path}`);
  const noPython = where("python");
  if (noPython.length > 0) {
    return new OperationError(
      "setup_failed",
      `sglang-jax's interpreter is not where the server start looks for it (sglang.dir ${config.sglang.dir} + /.venv/bin/python) on ${noPython.length} host(s):\n  ${noPython.join("\n  ")}`,
      {
        hint: `the task's setup installed sglang-jax elsewhere (a template installing relative to its working directory lands in ~/sky_workdir); set sglang.dir (--sglang-dir) to the absolute directory your template installs into, or install into $TPD_SGLANG_DIR`,
      },
    );
  }
  return new OperationError(
    "setup_failed",
    `the task's setup did not finish on ${missing.length} host(s): its marker is missing:\n  ${where("marker").join("\n  ")}`,
    {
      hint: `read the setup log with \`sky logs ${config.name}\`; a template of your own must end its setup with: touch "$TPD_SETUP_MARKER"; then run up again`,
    },
  );
}

export async function lastLogLines(sessions: Map<string, HostSession>, name: string, h: HostRecord, n = 30): Promise<string> {
  try {
    const r = await session(sessions, h).exec(tailCommand(remoteFiles(name), n, false), { timeoutMs: 10_000 });
    return r.stdout;
  } catch {
    return "(log unavailable)";
  }
}

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
  distInitAddr: string,
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
  const stopWatch = () => watchAbort.abort();
  ctx.signal.addEventListener("abort", stopWatch, { once: true });

  // One long-lived exec per rank that returns only when the server process exits.
  const deaths: HostRecord[] = [];
  const died = new Promise<void>((resolve) => {
    for (const h of hosts) {
      if (!h.pgid) continue;
      session(sessions, h)
        .exec(watchCommand(h.pgid), { timeoutMs: opts.timeoutMs + 60_000, signal: watchAbort.signal })
        .then((r) => {
          if (watchAbort.signal.aborted || !/exited/.test(r.stdout)) return;
          deaths.push(h);
          resolve();
        })
        .catch(() => undefined);
    }
  });

  const s0 = session(sessions, rank0);
  const headers: Record<string, string> = opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {};
  const get = (path: string, timeoutMs: number) =>
    httpViaSsh(s0, rank0.internalIp, config.server.port, {
      path,
      timeoutMs,
      signal: watchAbort.signal,
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
        const log = await lastLogLines(sessions, config.name, rank0, 20);
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
        const r = await s0
          .exec(`grep -qs 'Succeeds to synchronize' ${remoteFiles(config.name).log} && echo yes || echo no`, { timeoutMs: 10_000 })
          .catch(() => undefined);
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
      if (only) {
        const log = await lastLogLines(sessions, config.name, only, 30);
        throw new OperationError(
          "server_crashed",
          `rank ${only.rank} (${only.sshAlias}) exited during start; its last log lines:\n${indent(log)}`,
          {
            hint: `see everything with \`tpu-deploy logs ${config.name} --rank ${only.rank}\``,
          },
        );
      }
      const logs = await Promise.all(dead.map((d) => lastLogLines(sessions, config.name, d, 15)));
      const shown = dead.map((d, i) => `rank ${d.rank} (${d.sshAlias}):\n${indent(logs[i] ?? "")}`).join("\n");
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
    const serverInfo = JSON.parse(info.body || "{}") as Record<string, unknown>;
    const mismatches: string[] = [];
    if (Number(serverInfo.nnodes) !== config.topology.hosts)
      mismatches.push(`nnodes ${String(serverInfo.nnodes)} ≠ ${config.topology.hosts}`);
    if (Number(serverInfo.tp_size) !== config.server.tpSize)
      mismatches.push(`tp_size ${String(serverInfo.tp_size)} ≠ ${config.server.tpSize}`);
    if (config.topology.hosts > 1 && serverInfo.dist_init_addr !== distInitAddr) {
      mismatches.push(`dist_init_addr ${String(serverInfo.dist_init_addr)} ≠ ${distInitAddr}`);
    }
    if (info.status !== 200 || mismatches.length > 0) {
      throw new OperationError(
        "readiness_timeout",
        `rank 0 serves but disagrees with the plan: ${info.status !== 200 ? `HTTP ${info.status}` : mismatches.join(", ")}`,
        {
          hint: "another server may be answering on that port; run tpu-deploy restart",
        },
      );
    }
    mark("serving");
    return { serverInfo, phases };
  } finally {
    ctx.signal.removeEventListener("abort", stopWatch);
    watchAbort.abort();
  }
}

function indent(text: string): string {
  return text
    .trimEnd()
    .split("\n")
    .map((l) => `    ${l}`)
    .join("\n");
}
