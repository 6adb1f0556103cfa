// From what was observed about a cluster's hosts to each host's rank. Pure.
// Rank = slice offset + TPU worker number; slice 0 is the slice of SkyPilot's head host, so rank 0 is
// worker 0 of the head's slice. SkyPilot's own order (head, then the rest by external IP as a string)
// is NOT the worker order (skypilot.md §6) and is never used for ranks.
import type { SshEndpoint } from "./ssh-target.js";

/** A host from SkyPilot's SSH config; `index` is SkyPilot's: 0 for the head, N for `<c>-workerN`. */
export type SkyHost = SshEndpoint & { index: number };

export interface HostIdentity {
  workerId: number;
  internalIp: string;
  /** Identifies the slice (the TPU node name); all hosts of one slice share it. */
  sliceKey: string;
}

export interface RankedHost extends SkyHost, HostIdentity {
  rank: number;
  slice: number;
}

export interface TpuNodeView {
  name: string;
  endpoints: { workerId: number; internalIp: string; externalIp?: string | undefined }[];
}

export type Joined = { ok: true; identities: Map<string, HostIdentity> } | { ok: false; errors: string[] };

/** Match SSH targets to TPU node endpoints by address (HostName is the external IP, or the internal one). */
export function joinWithTpuNodes(targets: readonly SshEndpoint[], nodes: TpuNodeView[]): Joined {
  const identities = new Map<string, HostIdentity>();
  const errors: string[] = [];
  for (const t of targets) {
    const hits = nodes.flatMap((n) =>
      n.endpoints
        .filter((e) => e.externalIp === t.hostName || e.internalIp === t.hostName)
        .map((e) => ({ workerId: e.workerId, internalIp: e.internalIp, sliceKey: n.name })),
    );
    if (hits.length !== 1) {
      errors.push(
        hits.length === 0
          ? `host ${t.alias} (${t.hostName}) is in SkyPilot's SSH config but in none of the cluster's TPU nodes`
          : `host ${t.alias} (${t.hostName}) matches ${hits.length} TPU endpoints`,
      );
      continue;
    }
    const hit = hits[0];
    if (hit) identities.set(t.alias, hit);
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, identities };
}

export type RankResult = { ok: true; hosts: RankedHost[] } | { ok: false; errors: string[] };

export function assignRanks(
  targets: SkyHost[],
  identities: Map<string, HostIdentity>,
  expected: { slices: number; vmsPerSlice: number },
): RankResult {
  const errors: string[] = [];
  const want = expected.slices * expected.vmsPerSlice;
  if (targets.length !== want) {
    errors.push(`found ${targets.length} host(s), the plan needs ${want} (${expected.slices} slice(s) of ${expected.vmsPerSlice})`);
  }
  const head = targets.find((t) => t.index === 0);
  if (!head) errors.push("SkyPilot's SSH config has no head host");
  const joined: (SkyHost & HostIdentity)[] = [];
  for (const t of targets) {
    const id = identities.get(t.alias);
    if (!id) errors.push(`no TPU worker number and internal address for host ${t.alias}`);
    else joined.push({ ...t, ...id });
  }
  // Go on past a wrong count: which worker is missing or extra is what the user needs to know.
  if (!head) return { ok: false, errors };

  const headSlice = identities.get(head.alias)?.sliceKey ?? "";
  const keys = [...new Set(joined.map((h) => h.sliceKey))].sort((a, b) =>
    a === headSlice ? -1 : b === headSlice ? 1 : a < b ? -1 : a > b ? 1 : 0,
  );
  if (keys.length !== expected.slices) {
    errors.push(`found ${keys.length} slice(s), the plan needs ${expected.slices}`);
  }
  const hosts: RankedHost[] = [];
  keys.forEach((key, slice) => {
    const members = joined.filter((h) => h.sliceKey === key).sort((a, b) => a.workerId - b.workerId);
    const workers = members.map((m) => m.workerId);
    const complete = members.length === expected.vmsPerSlice && workers.every((w, i) => w === i);
    if (!complete) {
      errors.push(`slice ${key} has TPU workers [${workers.join(", ")}], expected 0..${expected.vmsPerSlice - 1}`);
      return;
    }
    for (const m of members) hosts.push({ ...m, slice, rank: slice * expected.vmsPerSlice + m.workerId });
  });
  const ips = new Set(hosts.map((h) => h.internalIp));
  if (ips.size !== hosts.length) errors.push("two hosts report the same internal address");
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, hosts: hosts.sort((a, b) => a.rank - b.rank) };
}

export function distInitAddr(hosts: RankedHost[], distPort: number): string {
  const rank0 = hosts.find((h) => h.rank === 0);
  if (!rank0) throw new Error("no rank 0");
  return `${rank0.internalIp}:${distPort}`;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
export function isIpv4(s: string): boolean {
  return IPV4.test(s);
}
