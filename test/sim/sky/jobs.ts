// SkyPilot's per-cluster job queue: submitting a job (setup + run on every host, run by a detached
// driver process as the cluster's job driver would be), job statuses, and tailing a job's log.
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readState, updateState } from "../state.js";
import { fileTailer, out, outln } from "./io.js";
import { pyJsonFlat } from "./pyfmt.js";
import { jobDir, readClusterMeta, updateClusterMeta, writeJobMeta, type JobMeta } from "./server-db.js";

export const TERMINAL = ["SUCCEEDED", "FAILED", "FAILED_SETUP", "FAILED_DRIVER", "CANCELLED"];

// exceptions.JobExitCode.from_job_status.
export function jobExitCode(status: string | null): number {
  if (status === null) return 102;
  if (status === "SUCCEEDED") return 0;
  if (status === "CANCELLED") return 103;
  if (["FAILED", "FAILED_SETUP", "FAILED_DRIVER"].includes(status)) return 100;
  return 101;
}

export interface JobSpec {
  root: string;
  cluster: string;
  clusterHash: string;
  jobId: number;
  setup: string | null;
  run: string | null;
  envs: Record<string, string>;
  secrets: Record<string, string>;
  taskId: string;
  clusterInfo: string;
  user: string;
  numGpusSetup: number;
  keyPath: string;
  numNodes: number; // the task's num_nodes: the job runs on the hosts of that many nodes (slices)
  proxyCommand?: string | null; // gcp.ssh_proxy_command the cluster was launched with
}

export function jobLogPath(root: string, clusterHash: string, jobId: number): string {
  return join(jobDir(root, clusterHash, jobId), "run.log");
}

function taskIdFor(cluster: string, jobId: number): string {
  const d = new Date();
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const stamp = `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}-${p(d.getUTCHours())}-${p(d.getUTCMinutes())}-${p(d.getUTCSeconds())}-${p(d.getUTCMilliseconds() * 1000, 6)}`;
  return `sky-${stamp}_${cluster}_${jobId}`;
}

export interface SubmitOptions {
  root: string;
  cluster: string;
  name: string | null;
  setup: string | null;
  run: string | null;
  envs: Record<string, string>;
  secrets: Record<string, string>;
  user: string;
  userHash: string;
  resources: string;
  numNodes: number;
  env: NodeJS.ProcessEnv;
}

// Adds the job (INIT) and starts its driver; returns the job id. Secrets reach the driver on stdin only.
export async function submitJob(o: SubmitOptions): Promise<number> {
  const meta = readClusterMeta(o.root, o.cluster);
  if (!meta) throw new Error(`no server record for cluster ${o.cluster}`);
  let jobId = 0;
  await updateClusterMeta(o.root, o.cluster, (m) => {
    jobId = m.nextJobId;
    m.nextJobId += 1;
  });
  const logPath = jobLogPath(o.root, meta.clusterHash, jobId);
  mkdirSync(dirname(logPath), { recursive: true });
  closeSync(openSync(logPath, "a"));
  const s0 = await readState(o.root);
  const c0 = s0.clusters[o.cluster];
  const numHosts = c0 ? c0.slices.reduce((n, sl) => n + sl.hostIds.length, 0) : 1;
  const now = Date.now();
  const taskId = taskIdFor(o.cluster, jobId);
  const jm: JobMeta = {
    id: jobId,
    name: o.name,
    username: o.user,
    userHash: o.userHash,
    submittedAt: now / 1000,
    startAt: null,
    endAt: null,
    resources: o.resources,
    driverPid: null,
    remoteLogPath: `~/sky_logs/${taskId.replace(/_.*$/, "")}`,
    numHosts,
  };
  await writeJobMeta(o.root, meta.clusterHash, jm);
  await updateState(o.root, (s) => {
    s.clusters[o.cluster]?.jobs.push({ id: jobId, status: "INIT", submittedAt: now, logPath });
  });
  const c = (await readState(o.root)).clusters[o.cluster];
  const spec: JobSpec = {
    root: o.root,
    cluster: o.cluster,
    clusterHash: meta.clusterHash,
    jobId,
    setup: o.setup,
    run: o.run,
    envs: o.envs,
    secrets: o.secrets,
    taskId,
    clusterInfo: pyJsonFlat({ cluster_name: o.cluster, cloud: "GCP", region: c?.region ?? null, zone: c?.zone ?? null }),
    user: o.user,
    numGpusSetup: 1,
    keyPath: meta.keyPath,
    numNodes: o.numNodes,
    proxyCommand: meta.sshProxyCommand ?? null,
  };
  const driverJs = join(dirname(fileURLToPath(import.meta.url)), "job-driver.js");
  const logFd = openSync(join(dirname(logPath), "driver.log"), "a");
  const child = spawn(process.execPath, [driverJs], {
    detached: true,
    stdio: ["pipe", logFd, logFd],
    env: { ...o.env, TPD_SIM_ROOT: o.root },
  });
  closeSync(logFd);
  child.stdin?.end(JSON.stringify(spec));
  const pid = child.pid ?? null;
  child.unref();
  await writeJobMeta(o.root, meta.clusterHash, { ...jm, driverPid: pid });
  return jobId;
}

export async function jobStatus(root: string, cluster: string, jobId: number): Promise<string | null> {
  const c = (await readState(root)).clusters[cluster];
  return c?.jobs.find((j) => j.id === jobId)?.status ?? null;
}

export interface TailOptions {
  root: string;
  cluster: string;
  clusterHash: string;
  jobId: number;
  follow: boolean;
  tail: number;
  numNodes: number;
  banner: boolean;
}

// sdk.tail_logs: stream the job's log (following until the job ends) and return its exit code.
export async function tailJobLog(o: TailOptions): Promise<number> {
  const path = jobLogPath(o.root, o.clusterHash, o.jobId);
  if (o.banner) {
    outln(`├── Waiting for task resources on ${o.numNodes} node${o.numNodes === 1 ? "" : "s"}.`);
    outln("└── Job started. Streaming logs... (Ctrl-C to exit log streaming; job will not be killed)");
  }
  let pending = "";
  const readNew = fileTailer(path);
  if (o.tail > 0) {
    const all = readNew();
    const lines = all.split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    pending = lines.slice(-o.tail).join("\n") + (lines.length > 0 ? "\n" : "");
  }
  let lastSeen: string | null = null;
  for (;;) {
    // An autodowned cluster takes its job table with it: keep the last status seen.
    const status: string | null = (await jobStatus(o.root, o.cluster, o.jobId)) ?? lastSeen;
    lastSeen = status;
    pending += readNew();
    const nl = pending.lastIndexOf("\n");
    if (nl >= 0) {
      out(pending.slice(0, nl + 1));
      pending = pending.slice(nl + 1);
    }
    const done = status === null || TERMINAL.includes(status);
    if (done || !o.follow) {
      pending += readNew();
      if (pending !== "") out(pending.endsWith("\n") ? pending : pending + "\n");
      if (status !== null && TERMINAL.includes(status) && o.follow) {
        outln(`${status === "SUCCEEDED" ? "✓" : "✗"} Job finished (status: ${status}).`);
      }
      return jobExitCode(status);
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}

export function readWholeLog(root: string, clusterHash: string, jobId: number): string {
  const p = jobLogPath(root, clusterHash, jobId);
  return existsSync(p) ? readFileSync(p, "utf8") : "";
}
