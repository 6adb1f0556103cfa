// Cluster records as `sky status` gets them from the API server (StatusResponse), refreshing as the
// server does, and the client's SSH-config bookkeeping that follows every such query.
import { readFileSync } from "node:fs";
import { readState, type SimCluster, type SimHost } from "../state.js";
import { refreshCluster, stableHosts } from "./cluster.js";
import { outln } from "./io.js";
import { cleanedUsername, localUsername } from "./names.js";
import { pyJsonDumps, renderTable, timeAgo } from "./pyfmt.js";
import { readClusterMeta, type ClusterMeta } from "./server-db.js";
import { addCluster, listClusterNames, removeCluster } from "./ssh-config.js";

export interface ClusterRecord {
  name: string;
  cluster: SimCluster;
  meta: ClusterMeta | null;
  hosts: SimHost[]; // stable order
  project: string;
  userHash: string;
}

export function globMatch(pattern: string, name: string): boolean {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i] as string;
    if (ch === "*") re += ".*";
    else if (ch === "?") re += ".";
    else if (ch === "[") {
      const j = pattern.indexOf("]", i + 1);
      if (j < 0) re += "\\[";
      else {
        let body = pattern.slice(i + 1, j);
        if (body.startsWith("!")) body = "^" + body.slice(1);
        re += `[${body.replace(/\\/g, "\\\\")}]`;
        i = j;
      }
    } else re += ch.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`, "s").test(name);
}

export interface QueryResult {
  records: ClusterRecord[];
  terminated: string[];
}

// skypilot-org/skypilot sky/utils/common.py StatusRefreshMode: NONE reads the database only (plain `sky status`:
// sky/client/cli/command.py status sets NONE unless
// -r), AUTO refreshes spot clusters whose status is older than 2 s (other commands), FORCE refreshes all (-r).
export type RefreshMode = "none" | "auto" | "force";

// core.status: the clusters (glob patterns allowed), refreshed as `mode` says.
export async function queryClusters(root: string, patterns: string[] | null, mode: RefreshMode): Promise<QueryResult> {
  const s0 = await readState(root);
  const names = Object.keys(s0.clusters).filter((n) => patterns === null || patterns.some((p) => globMatch(p, n)));
  const terminated: string[] = [];
  for (const n of mode === "none" ? [] : names) {
    const r = await refreshCluster(root, n, mode === "force");
    if (r.terminated) terminated.push(n);
  }
  const s = await readState(root);
  const records: ClusterRecord[] = [];
  for (const n of names) {
    const c = s.clusters[n];
    if (!c) continue;
    records.push({
      name: n,
      cluster: c,
      meta: readClusterMeta(root, n),
      hosts: stableHosts(s, c),
      project: s.project,
      userHash: s.userHash,
    });
  }
  records.sort((a, b) => b.cluster.launchedAt - a.cluster.launchedAt);
  return { records, terminated };
}

function hasIps(r: ClusterRecord): boolean {
  const ids = r.cluster.slices.flatMap((sl) => sl.hostIds);
  return ids.length > 0 && r.hosts.length === ids.length && r.meta !== null;
}

// command.py _get_cluster_records_and_set_ssh_config.
export function setSshConfig(home: string, records: ClusterRecord[], queried: string[] | null, allUsers: boolean): void {
  for (const r of records) {
    if (!hasIps(r) || r.meta === null) {
      removeCluster(home, r.name);
      continue;
    }
    let key: string;
    try {
      key = readFileSync(r.meta.keyPath, "utf8");
    } catch {
      continue;
    }
    addCluster(
      home,
      r.name,
      r.cluster.nameOnCloud,
      r.hosts.map((h) => h.externalIp),
      key,
      "gcpuser",
      22,
      r.meta.sshProxyCommand ?? null,
    );
  }
  const existing = new Set(records.map((r) => r.name));
  let toRemove: string[] = [];
  if (queried !== null) toRemove = queried.filter((q) => !existing.has(q));
  else if (allUsers) toRemove = listClusterNames(home).filter((n) => !existing.has(n));
  for (const n of toRemove) removeCluster(home, n);
}

function nodeNames(r: ClusterRecord): string | null {
  const parts: string[] = [];
  for (const sl of r.cluster.slices) {
    for (const id of sl.hostIds) {
      if (sl.nodeName !== null) parts.push(sl.nodeName);
      else {
        const h = r.hosts.find((x) => x.id === id);
        parts.push(`projects/${r.project}/zones/${r.cluster.zone}/instances/${h?.hostname ?? id}`);
      }
    }
  }
  return parts.length > 0 ? parts.join(",") : null;
}

function autostopStr(autostop: number, toDown: boolean): string {
  let s = "";
  let sep = "";
  if (autostop >= 0) {
    s = `${autostop}m`;
    sep = " ";
  }
  if (toDown) s += `${sep}(down)`;
  return s === "" ? "-" : s;
}

function lastEvent(r: ClusterRecord): string {
  if (r.cluster.lastEvent !== null) return r.cluster.lastEvent;
  return r.cluster.status === "UP" ? "Cluster launched." : "Cluster is being provisioned.";
}

// skypilot-org/skypilot PR #10014 (2026-07, after the reference build): INIT classified from the newest
// STATUS_CHANGE/LAUNCH_PROGRESS event; 'unhealthy' when it starts with ABNORMAL_STATUS_REASON_PREFIX.
function initKind(r: ClusterRecord): { init_kind: string | null; init_status_reason: string | null } {
  if (r.cluster.status !== "INIT") return { init_kind: null, init_status_reason: null };
  const reason = lastEvent(r);
  return { init_kind: reason.startsWith("Cluster is abnormal because") ? "unhealthy" : "launching", init_status_reason: reason };
}

// StatusResponse.model_dump(mode='json', exclude={'handle', 'credentials'}), in field order. The reference
// build (skypilot-seams.md §1) has no init_kind / init_status_reason; faults.json sky.initKindFields adds them
// as the newer build reports them.
export function statusJson(r: ClusterRecord, verbose: boolean, newerFields = false): Record<string, unknown> {
  const m = r.meta;
  const c = r.cluster;
  return {
    name: r.name,
    launched_at: Math.floor(c.launchedAt / 1000),
    last_use: verbose ? (m?.lastCreationCommand ?? null) : null,
    status: c.status,
    autostop: m?.autostopMinutes ?? -1,
    to_down: m?.toDown ?? false,
    owner: null,
    metadata: verbose ? {} : null,
    cluster_hash: c.clusterHash,
    cluster_ever_up: m?.everUp ?? false,
    status_updated_at: verbose && m ? Math.floor(m.statusUpdatedAt / 1000) : null,
    user_hash: r.userHash,
    user_name: m?.userName ?? localUsername(),
    config_hash: verbose ? (m?.configHash ?? null) : null,
    workspace: "default",
    last_creation_yaml: verbose ? (m?.lastCreationYaml ?? null) : null,
    last_creation_command: verbose ? (m?.lastCreationCommand ?? null) : null,
    is_managed: false,
    last_event: verbose ? lastEvent(r) : null,
    resources_str: m?.resourcesStr ?? "-",
    resources_str_full: m?.resourcesStrFull ?? "-",
    nodes: c.numNodes,
    cloud: "GCP",
    region: c.region,
    cpus: null,
    memory: null,
    accelerators: m?.acceleratorsRepr ?? null,
    labels: c.labels,
    cluster_name_on_cloud: verbose ? c.nameOnCloud : null,
    node_names: nodeNames(r),
    priority: 0,
    priority_class: null,
    ...(newerFields ? initKind(r) : {}),
  };
}

export function printStatusJson(records: ClusterRecord[], verbose: boolean, newerFields = false): void {
  outln(pyJsonDumps(records.map((r) => statusJson(r, verbose, newerFields))));
}

// status_utils.show_status_table.
export function printStatusTable(records: ClusterRecord[], verbose: boolean, allUsers: boolean, queried: string[] | null): void {
  if (records.length > 0) {
    const header = ["NAME", ...(allUsers ? ["USER"] : []), "INFRA", "RESOURCES", "STATUS", "AUTOSTOP", "LAUNCHED"];
    if (verbose) header.push("HEAD_IP", "COMMAND", "LAST_EVENT");
    const rows = records.map((r) => {
      const m = r.meta;
      const row = [
        r.name,
        ...(allUsers ? [m?.userName ?? cleanedUsername()] : []),
        `GCP (${r.cluster.zone})`,
        verbose ? (m?.resourcesStrFull ?? "-") : (m?.resourcesStr ?? "-"),
        r.cluster.status,
        autostopStr(m?.autostopMinutes ?? -1, m?.toDown ?? false),
        timeAgo(r.cluster.launchedAt / 1000),
      ];
      if (verbose) row.push(r.hosts[0]?.externalIp ?? "-", m?.lastCreationCommand ?? "-", lastEvent(r));
      return row;
    });
    outln(renderTable(header, rows));
  } else if (queried === null) {
    outln("No existing clusters.");
  }
  if (queried !== null) {
    const found = new Set(records.map((r) => r.name));
    const missing = queried.filter((q) => !records.some((r) => globMatch(q, r.name)) && !found.has(q));
    if (missing.length > 0) outln(`Cluster${missing.length > 1 ? "s" : ""} ${missing.map((x) => `'${x}'`).join(", ")} not found.`);
  }
}
