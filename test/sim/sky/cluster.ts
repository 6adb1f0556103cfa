// Cluster-level operations shared by the client commands, the request worker and the job driver:
// SkyPilot's stable host order, status refresh against the simulated cloud, and teardown.
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { killHosts } from "../hosts.js";
import {
  readFaults,
  readState,
  updateState,
  withFileLock,
  writeJsonAtomic,
  type SimCluster,
  type SimHost,
  type SimState,
} from "../state.js";
import {
  listJobMetas,
  listRequests,
  readClusterMeta,
  removeClusterMeta,
  serverDir,
  updateClusterMeta,
  type ClusterMeta,
} from "./server-db.js";

// cloud_vm_ray_backend stable_internal_external_ips: TPU worker 0 of the first node, then every other
// host sorted by external IP as a string. Ranks, SKYPILOT_NODE_IPS and -workerN aliases follow it.
export function stableHosts(s: SimState, c: SimCluster): SimHost[] {
  const ids = c.slices.flatMap((sl) => sl.hostIds);
  const hosts = ids.map((id) => s.hosts[id]).filter((h): h is SimHost => h !== undefined);
  const head = hosts.find((h) => h.id === c.headHostId) ?? hosts[0];
  if (!head) return [];
  const rest = hosts.filter((h) => h !== head).sort((a, b) => (a.externalIp < b.externalIp ? -1 : a.externalIp > b.externalIp ? 1 : 0));
  return [head, ...rest];
}

export function allHostIds(c: SimCluster): string[] {
  return c.slices.flatMap((sl) => sl.hostIds);
}

// A detached executor that was killed may linger as a zombie until something reaps it.
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

export function launchInFlight(root: string, cluster: string): boolean {
  return listRequests(root).some(
    (r) =>
      r.name === "sky.launch" &&
      r.clusterName === cluster &&
      (r.status === "RUNNING" || r.status === "PENDING") &&
      r.pid !== null &&
      processAlive(r.pid),
  );
}

export function killProcessTree(pid: number | null): void {
  if (pid === null || pid <= 0) return;
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, "SIGKILL");
    } catch {
      // gone
    }
  }
}

// Terminates everything of a cluster: job drivers, hosts, TPU nodes, the record.
export async function teardownCluster(root: string, name: string): Promise<void> {
  const s = await readState(root);
  const c = s.clusters[name];
  const meta = readClusterMeta(root, name);
  if (meta) for (const j of listJobMetas(root, meta.clusterHash)) if (j.driverPid !== process.pid) killProcessTree(j.driverPid);
  if (c) {
    const ids = [
      ...new Set([
        ...allHostIds(c),
        ...Object.values(s.hosts)
          .filter((h) => h.cluster === name && h.alive)
          .map((h) => h.id),
      ]),
    ];
    await killHosts(root, ids);
  }
  await updateState(root, (st) => {
    const cl = st.clusters[name];
    for (const n of Object.values(st.nodes)) {
      if (cl && (cl.slices.some((sl) => sl.nodeName === n.name) || n.labels["skypilot-cluster-name"] === cl.nameOnCloud)) {
        delete st.nodes[n.name];
      }
    }
    delete st.clusters[name];
  });
  removeClusterMeta(root, name);
}

export interface RefreshOutcome {
  cluster: SimCluster | null;
  terminated: boolean; // the cloud no longer has it; the record was dropped now
}

const CACHE_MS = 2000;

type NodeStatus = "INIT" | "UP" | "STOPPED" | null;

// skypilot-org/skypilot sky/provision/gcp/instance_utils.py GCPTPUVMInstance: PENDING_STATES = ['CREATING', 'STARTING', 'RESTARTING',
// 'REPAIRING'] → INIT, RUNNING_STATE = 'READY' → UP, STOPPING_STATES + STOPPED_STATES → STOPPED, anything else
// (PREEMPTED, TERMINATED, DELETING, UNKNOWN, …) → None, dropped by query_instances(non_terminated_only=True).
export function tpuNodeStatus(state: string): NodeStatus {
  if (["CREATING", "STARTING", "RESTARTING", "REPAIRING"].includes(state)) return "INIT";
  if (state === "READY") return "UP";
  if (["STOPPING", "STOPPED"].includes(state)) return "STOPPED";
  return null;
}

// skypilot-org/skypilot sky/backends/backend_utils.py refresh_cluster_record, with the AUTO mode of commands other than `sky status`
// (_must_refresh_cluster_status: spot clusters whose status is older than 2 s); `force` is FORCE (-r, the
// daemon, launch's check of an INIT cluster). A cluster with an in-flight launch keeps its record.
export async function refreshCluster(root: string, name: string, force: boolean): Promise<RefreshOutcome> {
  const s = await readState(root);
  const c = s.clusters[name];
  if (!c) return { cluster: null, terminated: false };
  const meta = readClusterMeta(root, name);
  const stale = meta === null || Date.now() - meta.statusUpdatedAt > CACHE_MS;
  if (!force && !(c.spot && stale)) return { cluster: c, terminated: false };
  if (launchInFlight(root, name)) return { cluster: c, terminated: false };
  return await refreshNow(root, name);
}

// Removes a cluster's record (and the server's metadata) without touching what it has on the cloud:
// post_teardown_cleanup after a refresh found no live node.
export async function dropClusterRecord(root: string, name: string): Promise<void> {
  await updateState(root, (st) => {
    delete st.clusters[name];
  });
  removeClusterMeta(root, name);
}

async function refreshNow(root: string, name: string): Promise<RefreshOutcome> {
  const s = await readState(root);
  const c = s.clusters[name];
  if (!c) return { cluster: null, terminated: false };
  const meta = readClusterMeta(root, name);
  let statuses: NodeStatus[];
  let allPreempted = false;
  if (c.accelerator !== null) {
    // query_instances lists the cluster's TPU nodes by label, whatever sky's record says.
    const nodes = Object.values(s.nodes).filter(
      (n) => n.labels["skypilot-cluster-name"] === c.nameOnCloud || c.slices.some((sl) => sl.nodeName === n.name),
    );
    // skypilot-org/skypilot sky/provision/gcp/instance.py query_instances: `all_preempted = all(s == 'PREEMPTED' for s in
    // raw_statuses.values())` (true for no node at all) → terminate_instances; a mix deletes nothing.
    allPreempted = nodes.every((n) => n.state === "PREEMPTED");
    statuses = nodes.map((n) => tpuNodeStatus(n.state)).filter((x) => x !== null);
  } else {
    // TPU7x VMs of a managed instance group: a live VM is RUNNING (UP), a gone one is not listed.
    statuses = allHostIds(c)
      .filter((id) => s.hosts[id]?.alive === true)
      .map(() => "UP" as const);
  }
  if (statuses.length === 0) {
    // backend_utils._update_cluster_status: no node left → "All nodes terminated, cleaning up the cluster." and the record
    // goes; only all-PREEMPTED TPU nodes were deleted on the way (others, e.g. UNKNOWN, stay on GCP).
    if (allPreempted) await teardownCluster(root, name);
    else await dropClusterRecord(root, name);
    return { cluster: null, terminated: true };
  }
  const total = c.numNodes;
  let next: SimCluster["status"];
  let event: string | null = null;
  if (statuses.length === total && statuses.every((x) => x === "UP")) {
    const healthy = allHostIds(c).every((id) => s.hosts[id]?.alive === true);
    if (!healthy) {
      next = "INIT";
      event = "Cluster is abnormal because ray cluster is unhealthy (None). Transitioned to INIT.";
    } else {
      // UP once the SkyPilot runtime was set up (a launch got that far); a half-made cluster stays INIT.
      next = meta?.everUp === true ? "UP" : c.status;
    }
  } else if (statuses.length === total && statuses.every((x) => x === "STOPPED")) {
    next = "STOPPED";
    event = "All nodes stopped, cleaning up the cluster.";
  } else {
    next = "INIT";
    const odd = statuses.filter((x) => x !== "UP");
    event =
      statuses.length < total
        ? "Cluster is abnormal because one or more nodes terminated. Transitioned to INIT."
        : `Cluster is abnormal because ${odd.length} of ${total} node(s) in unexpected state: ${[...new Set(odd)].join(", ")}. Transitioned to INIT.`;
  }
  await updateState(root, (st) => {
    const cl = st.clusters[name];
    if (!cl) return;
    // The event of a status change (_update_cluster_status records it on the transition).
    if (cl.status !== next) {
      if (event !== null) cl.lastEvent = event;
      cl.status = next;
    }
  });
  await updateClusterMeta(root, name, (m) => {
    m.statusUpdatedAt = Date.now();
  });
  const after = (await readState(root)).clusters[name] ?? null;
  return { cluster: after, terminated: false };
}

// skypilot-org/skypilot sky/server/daemons.py refresh_cluster_status_event: every CLUSTER_REFRESH_DAEMON_INTERVAL_SECONDS (60) the
// API server refreshes every cluster (backend_utils.refresh_cluster_records), skipping clusters with an
// in-flight request (PR #6349). The sim has no long-lived server: each sky invocation first does the
// refreshes that came due since the last one (faults.json sky.refreshDaemonMs; 0 turns the daemon off).
export const DEFAULT_REFRESH_DAEMON_MS = 60_000;

export async function runDueDaemonRefresh(root: string): Promise<void> {
  const interval = (await readFaults(root)).sky?.refreshDaemonMs ?? DEFAULT_REFRESH_DAEMON_MS;
  const path = join(serverDir(root), "daemon.json");
  mkdirSync(serverDir(root), { recursive: true });
  const due = await withFileLock(`${path}.lock`, async () => {
    let last: number | null = null;
    try {
      last = (JSON.parse(readFileSync(path, "utf8")) as { lastRefresh: number }).lastRefresh;
    } catch {
      last = null;
    }
    const now = Date.now();
    if (last === null || interval <= 0) {
      await writeJsonAtomic(path, { lastRefresh: now }); // the server (and its daemon clock) starts now
      return false;
    }
    if (now - last < interval) return false;
    await writeJsonAtomic(path, { lastRefresh: last + Math.floor((now - last) / interval) * interval });
    return true;
  });
  if (!due) return;
  for (const name of Object.keys((await readState(root)).clusters)) {
    if (launchInFlight(root, name)) continue;
    await refreshNow(root, name);
  }
}

export function clusterMetaOrThrow(root: string, name: string): ClusterMeta | null {
  return readClusterMeta(root, name);
}
