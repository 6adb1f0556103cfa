import { describe, expect, it } from "vitest";
import {
  assignRanks,
  distInitAddr,
  type HostIdentity,
  isIpv4,
  joinWithTpuNodes,
  type RankedHost,
  type SkyHost,
  type TpuNodeView,
} from "../../src/core/ranks.js";

/** One TPU VM host as the Cloud TPU API reports it (a networkEndpoints entry) plus the node it belongs to. */
interface TpuHost {
  node: string;
  workerId: number;
  internalIp: string;
  externalIp?: string;
}

const NODE = (id: string) => `projects/my-proj/locations/us-east5-b/nodes/${id}`;
const HEAD_NODE = NODE("sgl-2ea485ef-head-8k2m1x0q-tpu");
const WORKER_NODE = NODE("sgl-2ea485ef-worker-3v9c7d1a-tpu");

/**
 * What SkyPilot writes and what the API lists for these hosts. SkyPilot's order (skypilot.md §6): the head
 * (worker 0 of the head node) first, then the rest sorted by the address in HostName *as a string*;
 * aliases follow that order: `<c>`, `<c>-worker1`, ...
 */
function cluster(hosts: TpuHost[], headNode: string, opts: { internalIps?: boolean } = {}) {
  const address = (h: TpuHost) => (opts.internalIps ? h.internalIp : (h.externalIp ?? ""));
  const head = hosts.find((h) => h.node === headNode && h.workerId === 0);
  if (!head) throw new Error("fixture has no head");
  const rest = hosts.filter((h) => h !== head).sort((a, b) => (address(a) < address(b) ? -1 : address(a) > address(b) ? 1 : 0));
  const ordered = [head, ...rest];
  const targets: SkyHost[] = ordered.map((h, index) => ({
    alias: index === 0 ? "sgl" : `sgl-worker${index}`,
    index,
    hostName: address(h),
    user: "gcpuser",
    port: 22,
    identityFile: "/root/.sky/generated/ssh-keys/sgl.key",
  }));
  const names = [...new Set(hosts.map((h) => h.node))];
  const nodes: TpuNodeView[] = names.map((name) => ({
    name,
    endpoints: hosts
      .filter((h) => h.node === name)
      .map((h) => ({ workerId: h.workerId, internalIp: h.internalIp, externalIp: opts.internalIps ? undefined : h.externalIp })),
  }));
  return { targets, nodes, aliasOf: (h: TpuHost) => targets[ordered.indexOf(h)]?.alias ?? "?" };
}

type Outcome = { ok: true; hosts: RankedHost[] } | { ok: false; errors: string[] };

/** The two steps discover() runs: join SSH targets with the API's endpoints, then assign ranks. */
function rank(targets: SkyHost[], nodes: TpuNodeView[], expected: { slices: number; vmsPerSlice: number }): Outcome {
  const joined = joinWithTpuNodes(targets, nodes);
  if (!joined.ok) return joined;
  return assignRanks(targets, joined.identities, expected);
}

function ranked(o: Outcome): RankedHost[] {
  if (!o.ok) throw new Error(`expected ranks, got ${o.errors.join("; ")}`);
  return o.hosts;
}

function errorsOf(o: Outcome): string[] {
  if (o.ok) throw new Error(`expected errors, got ranks ${o.hosts.map((h) => `${h.alias}=${h.rank}`).join(", ")}`);
  return o.errors;
}

// A v6e-32 (8 hosts). External addresses chosen so that string order scrambles the workers.
const EXTERNAL = [
  "34.118.10.11",
  "34.118.10.5",
  "35.186.2.7",
  "34.118.10.23",
  "34.118.10.100",
  "34.118.10.9",
  "34.118.10.3",
  "34.118.10.42",
];
const INTERNAL = ["10.130.0.17", "10.130.0.4", "10.130.0.29", "10.130.0.12", "10.130.0.8", "10.130.0.31", "10.130.0.2", "10.130.0.25"];
const V6E_32: TpuHost[] = EXTERNAL.map((externalIp, workerId) => ({
  node: HEAD_NODE,
  workerId,
  externalIp,
  internalIp: INTERNAL[workerId] ?? "",
}));

describe("ranks on one v6e-32 slice", () => {
  it.each([
    { how: "HostName is the external IP", internalIps: false },
    { how: "HostName is the internal IP (gcp.use_internal_ips)", internalIps: true },
  ])("rank = TPU worker number, not SkyPilot's alias order, when $how", ({ internalIps }) => {
    const { targets, nodes } = cluster(V6E_32, HEAD_NODE, { internalIps });
    // The fixture is only meaningful if SkyPilot's order really differs from the worker order.
    const identities = joinWithTpuNodes(targets, nodes);
    if (!identities.ok) throw new Error(identities.errors.join("; "));
    const skyOrder = targets.map((t) => identities.identities.get(t.alias)?.workerId);
    expect(skyOrder).not.toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(skyOrder[0]).toBe(0);

    const hosts = ranked(rank(targets, nodes, { slices: 1, vmsPerSlice: 8 }));
    expect(hosts.map((h) => h.rank)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    for (const h of hosts) {
      expect(h.rank).toBe(h.workerId);
      expect(h.internalIp).toBe(INTERNAL[h.workerId]);
      expect(h.slice).toBe(0);
    }
    expect(hosts[0]?.alias).toBe("sgl");
    expect(distInitAddr(hosts, 10011)).toBe("10.130.0.17:10011");
  });

  it("maps SkyPilot's aliases to workers as the external-IP string order dictates", () => {
    const { targets, nodes } = cluster(V6E_32, HEAD_NODE);
    const hosts = ranked(rank(targets, nodes, { slices: 1, vmsPerSlice: 8 }));
    // Rest sorted as strings: .100 (w4) < .23 (w3) < .3 (w6) < .42 (w7) < .5 (w1) < .9 (w5) < 35.186.2.7 (w2).
    expect(Object.fromEntries(hosts.map((h) => [h.alias, h.rank]))).toEqual({
      sgl: 0,
      "sgl-worker1": 4,
      "sgl-worker2": 3,
      "sgl-worker3": 6,
      "sgl-worker4": 7,
      "sgl-worker5": 1,
      "sgl-worker6": 5,
      "sgl-worker7": 2,
    });
  });
});

describe("ranks on two slices", () => {
  const twoSlices = (headNode: string, otherNode: string): TpuHost[] => [
    ...[0, 1, 2, 3].map((w) => ({ node: headNode, workerId: w, externalIp: `34.10.0.${40 - w}`, internalIp: `10.0.0.${10 + w}` })),
    ...[0, 1, 2, 3].map((w) => ({ node: otherNode, workerId: w, externalIp: `34.10.0.${w + 1}`, internalIp: `10.0.1.${10 + w}` })),
  ];

  it.each([
    { names: "SkyPilot's own (head node sorts first)", head: HEAD_NODE, other: WORKER_NODE },
    { names: "the head's node sorting last", head: NODE("zz-slice"), other: NODE("aa-slice") },
  ])("the head host's slice is slice 0 with $names", ({ head, other }) => {
    const hosts = twoSlices(head, other);
    const { targets, nodes } = cluster(hosts, head);
    const r = ranked(rank(targets, nodes, { slices: 2, vmsPerSlice: 4 }));
    expect(r.map((h) => [h.rank, h.slice, h.sliceKey, h.workerId])).toEqual([
      [0, 0, head, 0],
      [1, 0, head, 1],
      [2, 0, head, 2],
      [3, 0, head, 3],
      [4, 1, other, 0],
      [5, 1, other, 1],
      [6, 1, other, 2],
      [7, 1, other, 3],
    ]);
    expect(r[0]?.alias).toBe("sgl");
    expect(distInitAddr(r, 10011)).toBe("10.0.0.10:10011");
  });
});

describe("hosts that do not match the plan", () => {
  const V6E_16: TpuHost[] = [0, 1, 2, 3].map((w) => ({
    node: HEAD_NODE,
    workerId: w,
    externalIp: `34.118.10.${[11, 5, 23, 7][w]}`,
    internalIp: `10.130.0.${[17, 4, 29, 12][w]}`,
  }));
  const plan = { slices: 1, vmsPerSlice: 4 };
  const withWorker = (hosts: TpuHost[], workerId: number, change: Partial<TpuHost>) =>
    hosts.map((h) => (h.workerId === workerId && h.node === HEAD_NODE ? { ...h, ...change } : h));

  it("a host missing from SkyPilot's SSH config: the count and the worker that is missing", () => {
    const { targets, nodes, aliasOf } = cluster(V6E_16, HEAD_NODE);
    const gone = aliasOf(V6E_16[2] as TpuHost);
    const errors = errorsOf(
      rank(
        targets.filter((t) => t.alias !== gone),
        nodes,
        plan,
      ),
    );
    expect(errors).toContain("found 3 host(s), the plan needs 4 (1 slice(s) of 4)");
    expect(errors).toContain(`slice ${HEAD_NODE} has TPU workers [0, 1, 3], expected 0..3`);
  });

  it("an extra host from a second TPU node of the cluster: the count, the extra slice and its workers", () => {
    const extra: TpuHost = { node: WORKER_NODE, workerId: 0, externalIp: "34.118.99.1", internalIp: "10.130.1.2" };
    const { targets, nodes } = cluster([...V6E_16, extra], HEAD_NODE);
    const errors = errorsOf(rank(targets, nodes, plan));
    expect(errors).toContain("found 5 host(s), the plan needs 4 (1 slice(s) of 4)");
    expect(errors).toContain("found 2 slice(s), the plan needs 1");
    expect(errors).toContain(`slice ${WORKER_NODE} has TPU workers [0], expected 0..3`);
  });

  it("two aliases for one host (a stale SSH config): the duplicate worker is named", () => {
    const { targets, nodes, aliasOf } = cluster(V6E_16, HEAD_NODE);
    const w1 = targets.find((t) => t.alias === aliasOf(V6E_16[1] as TpuHost));
    const stale = targets.map((t) => (t.alias === aliasOf(V6E_16[3] as TpuHost) ? { ...t, hostName: w1?.hostName ?? "" } : t));
    expect(errorsOf(rank(stale, nodes, plan))).toEqual([`slice ${HEAD_NODE} has TPU workers [0, 1, 1, 2], expected 0..3`]);
  });

  it("the API reporting one worker number twice", () => {
    const hosts = withWorker(V6E_16, 3, { workerId: 2 });
    const { targets, nodes } = cluster(hosts, HEAD_NODE);
    expect(errorsOf(rank(targets, nodes, plan))).toEqual([`slice ${HEAD_NODE} has TPU workers [0, 1, 2, 2], expected 0..3`]);
  });

  it("a gap in the worker numbers", () => {
    const hosts = withWorker(V6E_16, 3, { workerId: 4 });
    const { targets, nodes } = cluster(hosts, HEAD_NODE);
    expect(errorsOf(rank(targets, nodes, plan))).toEqual([`slice ${HEAD_NODE} has TPU workers [0, 1, 2, 4], expected 0..3`]);
  });

  it("two hosts with one internal IP, matched by external IP", () => {
    const hosts = withWorker(V6E_16, 3, { internalIp: "10.130.0.29" });
    const { targets, nodes } = cluster(hosts, HEAD_NODE);
    expect(errorsOf(rank(targets, nodes, plan))).toEqual(["two hosts report the same internal address"]);
  });

  it("two hosts with one internal IP, matched by internal IP: both hosts are ambiguous", () => {
    const hosts = withWorker(V6E_16, 3, { internalIp: "10.130.0.29" });
    const { targets, nodes, aliasOf } = cluster(hosts, HEAD_NODE, { internalIps: true });
    const errors = errorsOf(rank(targets, nodes, plan));
    expect(errors).toEqual([
      `host ${aliasOf(hosts[2] as TpuHost)} (10.130.0.29) matches 2 TPU endpoints`,
      `host ${aliasOf(hosts[3] as TpuHost)} (10.130.0.29) matches 2 TPU endpoints`,
    ]);
  });

  it("hosts in no TPU node of the cluster: every one is listed", () => {
    const { targets, nodes } = cluster(V6E_16, HEAD_NODE);
    const foreign = targets.map((t) =>
      t.alias === "sgl-worker1" ? { ...t, hostName: "34.9.9.9" } : t.alias === "sgl-worker3" ? { ...t, hostName: "34.9.9.10" } : t,
    );
    expect(errorsOf(rank(foreign, nodes, plan))).toEqual([
      "host sgl-worker1 (34.9.9.9) is in SkyPilot's SSH config but in none of the cluster's TPU nodes",
      "host sgl-worker3 (34.9.9.10) is in SkyPilot's SSH config but in none of the cluster's TPU nodes",
    ]);
  });

  it("several problems in several slices are all reported", () => {
    const hosts: TpuHost[] = [
      ...V6E_16,
      ...[0, 1, 3, 3].map((w, i) => ({ node: WORKER_NODE, workerId: w, externalIp: `34.20.0.${i + 1}`, internalIp: `10.130.1.${i + 1}` })),
    ];
    const { targets, nodes } = cluster(
      hosts.filter((h) => !(h.node === HEAD_NODE && h.workerId === 1)),
      HEAD_NODE,
    );
    const errors = errorsOf(rank(targets, nodes, { slices: 2, vmsPerSlice: 4 }));
    expect(errors).toEqual([
      "found 7 host(s), the plan needs 8 (2 slice(s) of 4)",
      `slice ${HEAD_NODE} has TPU workers [0, 2, 3], expected 0..3`,
      `slice ${WORKER_NODE} has TPU workers [0, 1, 3, 3], expected 0..3`,
    ]);
  });

  it("no head host and a host without an identity (metadata path)", () => {
    const { targets } = cluster(V6E_16, HEAD_NODE);
    const identities = new Map<string, HostIdentity>(
      targets.slice(1, 3).map((t, i) => [t.alias, { workerId: i + 1, internalIp: `10.0.0.${i + 1}`, sliceKey: "slice-0" }]),
    );
    const r = assignRanks(targets.slice(1), identities, plan);
    expect(r.ok ? [] : r.errors).toEqual([
      "found 3 host(s), the plan needs 4 (1 slice(s) of 4)",
      "SkyPilot's SSH config has no head host",
      "no TPU worker number and internal address for host sgl-worker3",
    ]);
  });
});

describe("distInitAddr", () => {
  it("refuses hosts without a rank 0", () => {
    const { targets, nodes } = cluster(V6E_32, HEAD_NODE);
    const hosts = ranked(rank(targets, nodes, { slices: 1, vmsPerSlice: 8 }));
    expect(() => distInitAddr(hosts.slice(1), 10011)).toThrow("no rank 0");
  });
});

describe("isIpv4", () => {
  it.each([
    ["10.130.0.17", true],
    ["0.0.0.0", true],
    ["255.255.255.255", true],
    ["198.19.0.1", true],
    ["256.1.1.1", false],
    ["1.2.3.256", false],
    ["010.1.1.1", false],
    ["1.2.3.04", false],
    ["1.2.3", false],
    ["1.2.3.4.5", false],
    ["1.2.3.", false],
    [".1.2.3", false],
    ["1..2.3", false],
    ["-1.2.3.4", false],
    ["1.2.3.4 ", false],
    [" 1.2.3.4", false],
    ["1.2.3.4\n", false],
    ["1.2.3.4/24", false],
    ["1.2.3.4:22", false],
    ["::1", false],
    ["::ffff:10.0.0.1", false],
    ["", false],
    ["a.b.c.d", false],
    ["１.2.3.4", false],
    ["metadata.google.internal", false],
  ])("%j → %s", (s, want) => {
    expect(isIpv4(s)).toBe(want);
  });
});
