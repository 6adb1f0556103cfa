// Cluster-level operations shared by the client commands, the request worker and the job driver:
// SkyPilot's stable host order, status refresh against the simulated cloud, and teardown.
import { killHosts } from "../hosts.js";
import { readFileSync } from "node:fs";
import { readState, updateState, type SimCluster, type SimHost, type SimState } from "../state.js";
import { listJobMetas, listRequests, readClusterMeta, removeClusterMeta, updateClusterMeta, type ClusterMeta } from "./server-db.js";

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

// backend_utils.refresh_cluster_record: spot clusters whose status is older than 2 s are always
// refreshed; others only when forced (-r). A cluster with an in-flight launch keeps its record.
export async function refreshCluster(root: string, name: string, force: boolean): Promise<RefreshOutcome> {
  const s = await readState(root);
  const c = s.clusters[name];
  if (!c) return { cluster: null, terminated: false };
  const meta = readClusterMeta(root, name);
  const stale = meta === null || Date.now() - meta.statusUpdatedAt > CACHE_MS;
  if (!force && !(c.spot && stale)) return { cluster: c, terminated: false };
  if (launchInFlight(root, name)) return { cluster: c, terminated: false };

  let up = 0;
  let gone = 0;
  for (const sl of c.slices) {
    const hostsAlive = sl.hostIds.map((id) => s.hosts[id]?.alive === true);
    const nodeState = sl.nodeName === null ? null : (s.nodes[sl.nodeName]?.state ?? "GONE");
    if (nodeState === "PREEMPTED" || nodeState === "TERMINATED" || nodeState === "DELETING" || nodeState === "GONE") gone++;
    else if (nodeState === null && hostsAlive.every((a) => !a)) gone++;
    else if (hostsAlive.every((a) => a) && (nodeState === null || nodeState === "READY")) up++;
  }
  const total = c.slices.length;
  if (total > 0 && gone === total) {
    // All nodes gone: SkyPilot deletes the PREEMPTED TPU nodes and drops the cluster (skypilot.md §9).
    await teardownCluster(root, name);
    return { cluster: null, terminated: true };
  }
  if (total > 0 && up < total && c.status === "UP") {
    const event =
      `Cluster is abnormal because ${total - up} of ${total} node${total > 1 ? "s are" : " is"} not UP ` +
      `(terminated, preempted or unhealthy). Transitioned to INIT.`;
    await updateState(root, (st) => {
      const cl = st.clusters[name];
      if (cl) {
        cl.status = "INIT";
        cl.lastEvent = event;
      }
    });
  }
  await updateClusterMeta(root, name, (m) => {
    m.statusUpdatedAt = Date.now();
  });
  const after = (await readState(root)).clusters[name] ?? null;
  return { cluster: after, terminated: false };
}

export function clusterMetaOrThrow(root: string, name: string): ClusterMeta | null {
  return readClusterMeta(root, name);
}
