// Starting and stopping sglang-jax on every host of a replica, in parallel over SSH (one session per host).
import type { HostSession } from "../adapters/ssh/session.js";
import { redactableSecrets } from "../adapters/secrets.js";
import type { Config } from "../core/config.js";
import { bindRank, type ReplicaPlan } from "../core/plan.js";
import { redactor } from "../core/redact.js";
import {
  installAndStartCommand,
  MISSING_MARK,
  remoteFiles,
  runScript,
  secretsEnvFile,
  stopCommand,
  stopFromPidFileCommand,
  tailCommand,
} from "../core/remote.js";
import type { HostRecord } from "../core/state.js";
import { OperationError, PartialFailureError } from "../errors.js";
import { type AppContext, interruptedFrom, settleEach } from "./context.js";
import type { DiscoveredHost } from "./discover.js";

/**
 * Commands in flight at once, one per host (each on its own host's connection): a whole v6e-256 slice (64
 * hosts) at once, so starting the last rank does not wait for the first ones.
 */
export const CONCURRENCY = 64;

export function sessionOf(sessions: Map<string, HostSession>, h: { sshAlias?: string; alias?: string }): HostSession {
  const alias = h.sshAlias ?? h.alias ?? "";
  const s = sessions.get(alias);
  if (!s) throw new OperationError("ssh_failed", `no SSH session to ${alias}`);
  return s;
}

export function toHostRecords(hosts: DiscoveredHost[]): HostRecord[] {
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
    ...(h.proxyCommand ? { proxyCommand: h.proxyCommand } : {}),
    hostKeys: h.hostKeys,
    hostKeysFrom: h.hostKeysFrom,
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
  const results = await settleEach(hosts, CONCURRENCY, async (h) => {
    const s = sessionOf(sessions, h);
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
 * Starts every rank of the replica with the plan's argv (rank 0's internal address filled in). One SSH round
 * trip per host: prerequisites checked, secrets in on stdin, run.sh written, the server started.
 */
export async function startServers(
  ctx: AppContext,
  sessions: Map<string, HostSession>,
  config: Config,
  replica: ReplicaPlan,
  hosts: HostRecord[],
  secrets: Map<string, string>,
): Promise<HostRecord[]> {
  const files = remoteFiles(config.name);
  const secretsText = secretsEnvFile(secrets, config.server.apiKeySecret);
  const pre = replica.prerequisites;
  const rank0 = hosts.find((h) => h.rank === 0);
  if (!rank0) throw new OperationError("internal", "no rank 0");
  const missing: { rank: number; host: string; kind: string; path: string }[] = [];
  const results = await settleEach(hosts, CONCURRENCY, async (h) => {
    const s = sessionOf(sessions, h);
    const opts = { timeoutMs: 30_000, signal: ctx.signal };
    const planned = replica.ranks.find((r) => r.rank === h.rank);
    if (!planned) throw new Error(`rank ${h.rank} is not in the plan`);
    const script = runScript({
      files,
      argv: bindRank(planned, rank0.internalIp),
      env: config.server.env,
      apiKeySecret: config.server.apiKeySecret,
      secretNames: [...secrets.keys()],
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

/**
 * A rank's last log lines, for an error message. Redacted here as `logs` redacts (the host's log is filtered
 * as it is written; a log from an older start may not be): error text reaches the terminal, --json and state.
 */
export async function lastLogLines(
  ctx: AppContext,
  sessions: Map<string, HostSession>,
  config: Config,
  h: HostRecord,
  n = 30,
): Promise<string> {
  try {
    const r = await sessionOf(sessions, h).exec(tailCommand(remoteFiles(config.name), n, false), { timeoutMs: 10_000 });
    return redactor(redactableSecrets(config, ctx.env))(r.stdout);
  } catch {
    return "(log unavailable)";
  }
}

export function indent(text: string): string {
  return text
    .trimEnd()
    .split("\n")
    .map((l) => `    ${l}`)
    .join("\n");
}
