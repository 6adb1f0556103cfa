// What SkyPilot's API server keeps beside the cloud itself: per-cluster records that state.json has no
// field for (autostop, key, resources strings, status timestamps), job metadata and logs, and API
// requests. Cluster/job/host truth stays in state.json (shared with the rest of the sim).
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { readState, updateState, withFileLock, writeJsonAtomic, type SimCluster, type SimState } from "../state.js";

export interface ClusterMeta {
  name: string;
  clusterHash: string;
  autostopMinutes: number; // -1 when unset
  toDown: boolean;
  waitFor: string;
  statusUpdatedAt: number; // ms
  everUp: boolean;
  keyPath: string;
  pubKey: string;
  acceleratorsRepr: string | null; // "{'tpu-v6e-16': 1}"
  resourcesStr: string;
  resourcesStrFull: string;
  resourcesRepr: string; // launched Resources.__repr__
  runtimeVersion: string | null;
  ports: string[];
  lastCreationYaml: string | null;
  lastCreationCommand: string | null;
  provisionLog: string | null;
  configHash: string | null;
  nextJobId: number;
  launchRequestId: string | null;
  userName: string;
  sshProxyCommand?: string | null; // auth.ssh_proxy_command of the cluster yaml (gcp.ssh_proxy_command)
}

export interface JobMeta {
  id: number;
  name: string | null;
  username: string;
  userHash: string;
  submittedAt: number; // s, float
  startAt: number | null;
  endAt: number | null;
  resources: string;
  driverPid: number | null;
  remoteLogPath: string;
  numHosts: number;
}

export type RequestStatus = "PENDING" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELLED";

export interface RequestRecord {
  requestId: string;
  name: string; // "sky.launch"
  status: RequestStatus;
  clusterName: string | null;
  createdAt: number; // s
  finishedAt: number | null;
  pid: number | null;
  userName: string;
  userHash: string;
  result: { jobId: number | null } | null;
  error: { pyClass: string; message: string } | null;
}

export function serverDir(root: string): string {
  return join(root, "sky-server");
}

function metaPath(root: string, name: string): string {
  return join(serverDir(root), "clusters", `${name}.json`);
}

export function readClusterMeta(root: string, name: string): ClusterMeta | null {
  try {
    return JSON.parse(readFileSync(metaPath(root, name), "utf8")) as ClusterMeta;
  } catch {
    return null;
  }
}

export async function writeClusterMeta(root: string, meta: ClusterMeta): Promise<void> {
  mkdirSync(join(serverDir(root), "clusters"), { recursive: true });
  await writeJsonAtomic(metaPath(root, meta.name), meta);
}

export async function updateClusterMeta(root: string, name: string, fn: (m: ClusterMeta) => void): Promise<ClusterMeta | null> {
  mkdirSync(join(serverDir(root), "clusters"), { recursive: true });
  return await withFileLock(`${metaPath(root, name)}.lock`, async () => {
    const m = readClusterMeta(root, name);
    if (!m) return null;
    fn(m);
    await writeJsonAtomic(metaPath(root, name), m);
    return m;
  });
}

export function removeClusterMeta(root: string, name: string): void {
  rmSync(metaPath(root, name), { force: true });
}

export function jobDir(root: string, clusterHash: string, jobId: number): string {
  return join(serverDir(root), "jobs", clusterHash, String(jobId));
}

export function readJobMeta(root: string, clusterHash: string, jobId: number): JobMeta | null {
  try {
    return JSON.parse(readFileSync(join(jobDir(root, clusterHash, jobId), "meta.json"), "utf8")) as JobMeta;
  } catch {
    return null;
  }
}

export async function writeJobMeta(root: string, clusterHash: string, meta: JobMeta): Promise<void> {
  const dir = jobDir(root, clusterHash, meta.id);
  mkdirSync(dir, { recursive: true });
  await writeJsonAtomic(join(dir, "meta.json"), meta);
}

export function listJobMetas(root: string, clusterHash: string): JobMeta[] {
  const dir = join(serverDir(root), "jobs", clusterHash);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((d) => readJobMeta(root, clusterHash, Number(d)))
    .filter((m): m is JobMeta => m !== null);
}

export function requestPath(root: string, id: string): string {
  return join(root, "requests", `${id}.json`);
}

export function requestLogPath(root: string, id: string): string {
  return join(root, "requests", `${id}.log`);
}

export function readRequest(root: string, id: string): RequestRecord | null {
  try {
    return JSON.parse(readFileSync(requestPath(root, id), "utf8")) as RequestRecord;
  } catch {
    return null;
  }
}

export async function writeRequest(root: string, r: RequestRecord): Promise<void> {
  mkdirSync(join(root, "requests"), { recursive: true });
  await writeJsonAtomic(requestPath(root, r.requestId), r);
}

export async function updateRequest(root: string, id: string, fn: (r: RequestRecord) => void): Promise<RequestRecord | null> {
  return await withFileLock(`${requestPath(root, id)}.lock`, async () => {
    const r = readRequest(root, id);
    if (!r) return null;
    fn(r);
    await writeJsonAtomic(requestPath(root, id), r);
    return r;
  });
}

export function listRequests(root: string): RequestRecord[] {
  const dir = join(root, "requests");
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .map((f) => readRequest(root, f.slice(0, -5)))
    .filter((r): r is RequestRecord => r !== null)
    .sort((a, b) => a.createdAt - b.createdAt);
}

export function newRequestId(): string {
  return randomUUID();
}

export { readState, updateState, type SimCluster, type SimState };
