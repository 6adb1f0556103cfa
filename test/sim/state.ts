// The simulated cloud's shared state (SIM_ROOT/state.json) and the files around it.
// Several processes change state.json (the fake sky, its request workers, the TPU emulator, the harness),
// so every change runs under a cross-process lock and lands with an atomic rename.
import { randomBytes } from "node:crypto";
import { constants as fsc } from "node:fs";
import { appendFile, link, mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { join } from "node:path";

export interface SimState {
  project: string;
  userHash: string;
  clusters: Record<string, SimCluster>;
  nodes: Record<string, SimTpuNode>;
  hosts: Record<string, SimHost>;
  nextHostSeq: number;
}

export interface SimSlice {
  nodeName: string | null;
  hostIds: string[];
}

export interface SimJob {
  id: number;
  status: string;
  submittedAt: number;
  logPath: string;
}

export interface SimCluster {
  name: string;
  nameOnCloud: string;
  status: "INIT" | "UP" | "STOPPED";
  zone: string;
  region: string;
  spot: boolean;
  accelerator: string | null;
  instanceType: string | null;
  numNodes: number;
  labels: Record<string, string>;
  launchedAt: number;
  clusterHash: string;
  slices: SimSlice[];
  headHostId: string;
  jobs: SimJob[];
  lastEvent: string | null;
  autodown: boolean;
}

// google.cloud.tpu.v2.Node.State (the ones a TPU VM node of the sim can be in).
export type SimTpuNodeState =
  | "CREATING"
  | "READY"
  | "RESTARTING"
  | "REPAIRING"
  | "STARTING"
  | "STOPPING"
  | "STOPPED"
  | "PREEMPTED"
  | "TERMINATED"
  | "DELETING"
  | "UNKNOWN";

export interface SimTpuNode {
  name: string;
  zone: string;
  acceleratorType: string;
  runtimeVersion: string;
  state: SimTpuNodeState;
  labels: Record<string, string>;
  preemptible: boolean;
  createTime: number;
  id: string;
  hostIds: string[];
}

export interface SimHost {
  id: string;
  netns: string;
  externalIp: string;
  internalIp: string;
  workerId: number;
  cluster: string;
  nodeName: string | null;
  zone: string;
  hostname: string;
  alive: boolean;
  /**
   * The host's public SSH host keys as its guest agent published them (guest attributes hostkeys/<type>),
   * in the agent's order (ecdsa, ed25519, rsa). Published once, at first boot: replacing the keys on
   * the host later does not change these (replaceHostKeys).
   */
  hostKeys?: SimHostKey[];
  /** When sshd first accepted connections (ms); the keys show in the TPU API faults.guestAttributes later. */
  bootedAt?: number;
}

/** `type` as in known_hosts (ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa); `key` the base64 blob. */
export interface SimHostKey {
  type: string;
  key: string;
}

export interface SkyFaults {
  capacityZones?: string[];
  quota?: { zone: string; scope: "region" | "zone" };
  preemptDuringCreateZones?: string[];
  setupFail?: boolean;
  provisionDelayMs?: number;
  hangProvision?: boolean;
  // The API server's status-refresh daemon: every refreshDaemonMs (default 60000) it refreshes every cluster
  // as `sky status -r` would; 0 turns it off.
  refreshDaemonMs?: number;
  // `sky down` fails as a GCP teardown error does (clusters named, or all when omitted).
  downFail?: { clusters?: string[]; kind?: "cloud" | "runtime"; message?: string };
  // Report the newer build's INIT classification (init_kind / init_status_reason) in `sky status -o json`.
  initKindFields?: boolean;
}

export interface ServerCrashFault {
  rank: number;
  /** after-ready: once the scheduler told the main process it is ready (the HTTP server then starts). */
  when: "before-rendezvous" | "after-rendezvous" | "after-ready";
  /** exception (default): the scheduler raises and SIGQUITs the main process; sigkill: only the scheduler dies. */
  how?: "exception" | "sigkill";
}

export interface ServerFaults {
  loadDelayMs?: number;
  crash?: ServerCrashFault | null;
  neverReady?: boolean;
  wedged?: boolean;
  slowHealthGenerateMs?: number;
  // Rank 0's engine takes this long per generation request, one request at a time (re-read for every batch).
  requestTimeMs?: number;
  ignoreSigtermRanks?: number[];
  jaxInitTimeoutMs?: number;
  jaxHeartbeatTimeoutMs?: number;
  healthCheckTimeoutMs?: number | null;
  /** Not a fault: the server runs under SCHED_IDLE (benchmarks; sgl_jax/faults.py says why). */
  cpuIdle?: boolean;
}

// What the TPU API's GetGuestAttributes shows of the hosts' guest agents.
export interface GuestAttributeFaults {
  /** How long after boot a host's SSH host keys appear (the agent's first-boot step); default 1000 ms. */
  hostKeysDelayMs?: number;
  /** The keys never appear (no guest agent step, guest attributes disabled by policy, a pre-2022 TPU). */
  noHostKeys?: boolean;
}

export interface Faults {
  sky?: SkyFaults;
  server?: ServerFaults;
  guestAttributes?: GuestAttributeFaults;
}

export interface SimConfig {
  id: string;
  project: string;
  metadataAddr: string;
  tpuApiPort: number;
  createdBy: number;
}

// sky: the fake sky's invocations; tpu: Cloud TPU API RPCs; server: rank 0's answers on /health and
// /health_generate, written by the sglang-jax double on the hosts (test/sim/sgl_jax/http_server.py record_call).
export type CallKind = "sky" | "tpu" | "server";

export function statePath(root: string): string {
  return join(root, "state.json");
}

export function emptyState(project: string, userHash: string): SimState {
  return { project, userHash, clusters: {}, nodes: {}, hosts: {}, nextHostSeq: 1 };
}

export async function readState(root: string): Promise<SimState> {
  return JSON.parse(await readFile(statePath(root), "utf8")) as SimState;
}

// Runs fn on the current state under the lock and writes the state back (fn mutates it in place).
// Whatever fn returns is returned. If fn throws, nothing is written. Not re-entrant: do not call
// updateState from inside fn.
export async function updateState<R>(root: string, fn: (s: SimState) => R | Promise<R>): Promise<R> {
  const release = await acquireLock(`${statePath(root)}.lock`);
  try {
    const s = await readState(root);
    const result = await fn(s);
    await writeJsonAtomic(statePath(root), s);
    return result;
  } finally {
    await release();
  }
}

// Only for creating the state the first time (startSim); everyone else goes through updateState.
export async function writeInitialState(root: string, s: SimState): Promise<void> {
  await writeJsonAtomic(statePath(root), s);
}

export async function readFaults(root: string): Promise<Faults> {
  try {
    return JSON.parse(await readFile(join(root, "faults.json"), "utf8")) as Faults;
  } catch (e) {
    if (isErrno(e, "ENOENT")) return {};
    throw e;
  }
}

export async function writeFaults(root: string, f: Faults): Promise<void> {
  await writeJsonAtomic(join(root, "faults.json"), f);
}

export async function readSimConfig(root: string): Promise<SimConfig> {
  return JSON.parse(await readFile(join(root, "sim.json"), "utf8")) as SimConfig;
}

export async function writeSimConfig(root: string, c: SimConfig): Promise<void> {
  await writeJsonAtomic(join(root, "sim.json"), c);
}

// One line per call; a single O_APPEND write of a short line is not interleaved with other writers.
export async function appendCall(root: string, kind: CallKind, obj: object): Promise<void> {
  const dir = join(root, "calls");
  await mkdir(dir, { recursive: true });
  const line = JSON.stringify({ t: Date.now(), ...obj }) + "\n";
  await appendFile(join(dir, `${kind}.jsonl`), line);
}

export async function readCalls(root: string, kind: CallKind): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await readFile(join(root, "calls", `${kind}.jsonl`), "utf8");
  } catch (e) {
    if (isErrno(e, "ENOENT")) return [];
    throw e;
  }
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
  try {
    await fh.writeFile(JSON.stringify(value, null, 2) + "\n");
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

const LOCK_TIMEOUT_MS = 30_000;

// The same cross-process lock for other shared files (hosts.ts uses one for machine-wide network changes).
export async function withFileLock<R>(lockPath: string, fn: () => R | Promise<R>): Promise<R> {
  const release = await acquireLock(lockPath);
  try {
    return await fn();
  } finally {
    await release();
  }
}

// A lock file created with O_EXCL holding the owner's pid. A lock whose owner is dead (a killed fake sky)
// is taken over, so a crash never wedges the sim.
async function acquireLock(lockPath: string): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  const token = `${process.pid} ${randomBytes(6).toString("hex")}\n`;
  for (;;) {
    try {
      const fh = await open(lockPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o644);
      try {
        await fh.writeFile(token);
      } finally {
        await fh.close();
      }
      return async () => {
        // Only remove the lock if it is still ours (it could have been taken over if we looked dead).
        const now = await readFile(lockPath, "utf8").catch(() => "");
        if (now === token) await unlink(lockPath).catch(() => undefined);
      };
    } catch (e) {
      if (!isErrno(e, "EEXIST")) throw e;
    }
    await takeOverIfStale(lockPath);
    if (Date.now() > deadline) {
      const holder = await readFile(lockPath, "utf8").catch(() => "?");
      throw new Error(`state lock ${lockPath} still held after ${LOCK_TIMEOUT_MS} ms (holder: ${holder.trim()})`);
    }
    await sleep(2 + Math.floor(Math.random() * 8));
  }
}

async function takeOverIfStale(lockPath: string): Promise<void> {
  const content = await readFile(lockPath, "utf8").catch(() => null);
  if (content === null || !content.endsWith("\n")) return; // gone, or its owner is still writing it
  const pid = Number(content.split(" ")[0]);
  if (!Number.isInteger(pid) || pid <= 0 || pidAlive(pid)) return;
  // Move the stale file aside atomically, then check that what we moved is the stale one; if another
  // process replaced it in between, put that one back (link fails if a third lock appeared meanwhile).
  const aside = `${lockPath}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await rename(lockPath, aside);
  } catch {
    return;
  }
  const moved = await readFile(aside, "utf8").catch(() => "");
  if (moved !== content) {
    await link(aside, lockPath).catch(() => undefined);
    await unlink(aside).catch(() => undefined);
    return;
  }
  await unlink(aside).catch(() => undefined);
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return isErrno(e, "EPERM");
  }
}

function isErrno(e: unknown, code: string): boolean {
  return typeof e === "object" && e !== null && "code" in e && (e as { code: unknown }).code === code;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
