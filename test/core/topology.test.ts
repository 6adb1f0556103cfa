import { describe, expect, it } from "vitest";
import { type ConfigSource, resolveConfig } from "../../src/core/config.js";
import {
  ambiguousV7,
  generationOf,
  normaliseAccelerator,
  planTopology,
  regionOf,
  type Topology,
  type TopologyRequest,
  V6E_ACCELERATORS,
  V7_ACCELERATORS,
} from "../../src/core/topology.js";

function plan(req: TopologyRequest): Topology {
  const r = planTopology(req);
  if (!r.ok) throw new Error(`expected ${JSON.stringify(req)} to plan, got ${JSON.stringify(r.issues)}`);
  return r.topology;
}

function refuse(req: TopologyRequest): { path: string; message: string } {
  const r = planTopology(req);
  if (r.ok) throw new Error(`expected ${JSON.stringify(req)} to be refused, got ${JSON.stringify(r.topology)}`);
  expect(r.issues).toHaveLength(1);
  const [issue] = r.issues;
  if (!issue) throw new Error("no issue");
  return issue;
}

/** What a user cares about: the slice, how many copies, hosts (--nnodes), --tp-size and what SkyPilot is asked for. */
function summary(t: Topology) {
  return {
    accelerator: t.slice.accelerator,
    topology: t.slice.topology,
    replicas: t.replicas,
    hosts: t.hosts,
    tpSize: t.tpSize,
    sky: t.sky,
  };
}

describe("v6e: --nodes alone is the hosts of one slice", () => {
  const v6e = (accelerator: string, topology: string, replicas: number, hosts: number, tpSize: number) => ({
    accelerator,
    topology,
    replicas,
    hosts,
    tpSize,
    // One slice per SkyPilot cluster: num_nodes 1, setup and run go to every host of it.
    sky: { accelerators: `tpu-${accelerator}`, instanceType: null, numNodes: 1 },
  });
  it.each([
    { nodes: undefined, want: v6e("v6e-8", "2x4", 1, 1, 8) },
    { nodes: 1, want: v6e("v6e-8", "2x4", 1, 1, 8) },
    { nodes: 4, want: v6e("v6e-16", "4x4", 1, 4, 16) },
    { nodes: 8, want: v6e("v6e-32", "4x8", 1, 8, 32) },
    { nodes: 16, want: v6e("v6e-64", "8x8", 1, 16, 64) },
    { nodes: 32, want: v6e("v6e-128", "8x16", 1, 32, 128) },
    { nodes: 64, want: v6e("v6e-256", "16x16", 1, 64, 256) },
    // No v6e slice has these many hosts: that many replicas of one v6e-4, never one model across slices.
    { nodes: 2, want: v6e("v6e-4", "2x2", 2, 1, 4) },
    { nodes: 3, want: v6e("v6e-4", "2x2", 3, 1, 4) },
    { nodes: 5, want: v6e("v6e-4", "2x2", 5, 1, 4) },
    { nodes: 12, want: v6e("v6e-4", "2x2", 12, 1, 4) },
  ])("--nodes $nodes → $want.replicas × $want.accelerator, --nnodes $want.hosts, tp $want.tpSize", ({ nodes, want }) => {
    expect(summary(plan({ generation: "v6e", nodes }))).toEqual(want);
  });

  it("says the --nodes 2 layout in one sentence: replicas, chips and HBM each, chips billed, and the one-slice choices", () => {
    const t = plan({ generation: "v6e", nodes: 2 });
    expect(t.layout).toBe(
      "2 replicas, each one v6e-4: 1 host, 4 chips, 128 GB HBM, serving the whole model (8 chips billed in total); " +
        "no v6e slice has 2 hosts; for one slice use --nodes 4 (one v6e-16) or --tpu v7 --nodes 2 (one 2x2x2 slice)",
    );
    expect(t.warnings).toEqual([]);
  });

  it("one slice: the slice, its hosts, chips and HBM", () => {
    expect(plan({ generation: "v6e", nodes: 8 }).layout).toBe("one v6e-32: 8 hosts, 32 chips, 1 TB HBM");
  });
});

describe("v6e: --replicas", () => {
  it.each([
    { nodes: 4, replicas: 2, accelerator: "v6e-16", hosts: 4, total: 32 },
    { nodes: 1, replicas: 3, accelerator: "v6e-8", hosts: 1, total: 24 },
    { nodes: undefined, replicas: 2, accelerator: "v6e-8", hosts: 1, total: 16 },
  ])("--nodes $nodes --replicas $replicas → $replicas × $accelerator", ({ nodes, replicas, accelerator, hosts, total }) => {
    const t = plan({ generation: "v6e", nodes, replicas });
    expect({ accelerator: t.slice.accelerator, replicas: t.replicas, hosts: t.hosts }).toEqual({ accelerator, replicas, hosts });
    expect(t.layout).toContain(`${total} chips billed in total`);
  });

  it("--nodes 2 --replicas 3 cannot be honoured: no 2-host v6e slice, and replicas were asked for", () => {
    const issue = refuse({ generation: "v6e", nodes: 2, replicas: 3 });
    expect(issue.path).toBe("tpu.nodes");
    expect(issue.message).toContain("no v6e slice has 2 hosts");
    expect(issue.message).toContain("1, 4, 8, 16, 32 or 64");
    expect(issue.message).toContain("--tpu v7 --nodes 2");
  });

  it.each([0, 65, 1.5])("--replicas %s is refused", (replicas) => {
    expect(refuse({ generation: "v6e", nodes: 1, replicas }).path).toBe("replicas");
  });
});

describe("v6e: --accelerator with --nodes", () => {
  it.each([
    { accelerator: "v6e-1", nodes: undefined, replicas: 1, hosts: 1, tpSize: 1 },
    { accelerator: "v6e-4", nodes: undefined, replicas: 1, hosts: 1, tpSize: 4 },
    { accelerator: "v6e-4", nodes: 3, replicas: 3, hosts: 1, tpSize: 4 },
    { accelerator: "v6e-8", nodes: 2, replicas: 2, hosts: 1, tpSize: 8 },
    { accelerator: "v6e-16", nodes: undefined, replicas: 1, hosts: 4, tpSize: 16 },
    { accelerator: "v6e-32", nodes: 8, replicas: 1, hosts: 8, tpSize: 32 },
    { accelerator: "v6e-256", nodes: undefined, replicas: 1, hosts: 64, tpSize: 256 },
  ])("$accelerator --nodes $nodes → $replicas × ($hosts hosts, tp $tpSize)", ({ accelerator, nodes, replicas, hosts, tpSize }) => {
    const t = plan({ generation: "v6e", accelerator, nodes });
    expect(t.slice.accelerator).toBe(accelerator);
    expect({ replicas: t.replicas, hosts: t.hosts, tpSize: t.tpSize }).toEqual({ replicas, hosts, tpSize });
    expect(t.sky).toEqual({ accelerators: `tpu-${accelerator}`, instanceType: null, numNodes: 1 });
  });

  it.each([
    { accelerator: "v6e-16", nodes: 2, per: 4 },
    { accelerator: "v6e-32", nodes: 16, per: 8 },
    { accelerator: "v6e-64", nodes: 24, per: 16 },
  ])("$accelerator --nodes $nodes is refused: one slice of $per hosts", ({ accelerator, nodes, per }) => {
    const issue = refuse({ generation: "v6e", accelerator, nodes });
    expect(issue.path).toBe("tpu.nodes");
    expect(issue.message).toContain(`one slice of ${per} hosts, so --nodes must be ${per} (got ${nodes})`);
    expect(issue.message).toContain("--replicas");
  });

  it.each(["v6e-2", "v6e-3", "v6e-12", "v6e-512", "v6e-", "v6e-x", "v6e-8.0", "tpu7x-8"])(
    "%s is not a v6e slice; the message lists every valid one",
    (accelerator) => {
      const issue = refuse({ generation: "v6e", accelerator });
      expect(issue.path).toBe("tpu.accelerator");
      expect(issue.message).toContain(`'${accelerator}'`);
      for (const valid of V6E_ACCELERATORS) expect(issue.message).toContain(valid);
    },
  );

  it("spells the accelerator canonically, so SkyPilot gets tpu-v6e-8 and never tpu-v6e-08", () => {
    const t = plan({ generation: "v6e", accelerator: "v6e-08" });
    expect(t.slice.accelerator).toBe("v6e-8");
    expect(t.sky.accelerators).toBe("tpu-v6e-8");
  });
});

describe("v7 (TPU7x)", () => {
  it.each([
    { nodes: 1, topology: "2x2x1", accelerator: "tpu7x-8" },
    { nodes: 2, topology: "2x2x2", accelerator: "tpu7x-16" },
    { nodes: 4, topology: "2x2x4", accelerator: "tpu7x-32" },
    { nodes: 8, topology: "2x4x4", accelerator: "tpu7x-64" },
    { nodes: 16, topology: "4x4x4", accelerator: "tpu7x-128" },
    { nodes: 32, topology: "4x4x8", accelerator: "tpu7x-256" },
    { nodes: 64, topology: "4x8x8", accelerator: "tpu7x-512" },
  ])("--nodes $nodes → one $topology slice ($accelerator), tp 8 × nodes, num_nodes = VMs", ({ nodes, topology, accelerator }) => {
    const t = plan({ generation: "v7", nodes });
    expect(summary(t)).toEqual({
      accelerator,
      topology,
      replicas: 1,
      hosts: nodes,
      // 4 chips per VM × 2 JAX devices per chip.
      tpSize: 8 * nodes,
      sky: { accelerators: null, instanceType: "tpu7x-standard-4t", numNodes: nodes },
    });
    expect(t.slice).toMatchObject({ vmsPerSlice: nodes, chipsPerSlice: 4 * nodes, devicesPerChip: 2 });
    // The same slice asked for by name, or by topology, plans identically.
    expect(plan({ generation: "v7", accelerator })).toEqual(t);
    expect(plan({ generation: "v7", topology })).toEqual(t);
  });

  it("defaults to one VM (tpu7x-8)", () => {
    expect(plan({ generation: "v7" }).slice.accelerator).toBe("tpu7x-8");
  });

  it.each([3, 5, 6, 7, 12, 48, 128])("--nodes %i is refused and the message lists 1, 2, 4, 8, 16, 32, 64", (nodes) => {
    const issue = refuse({ generation: "v7", nodes });
    expect(issue.path).toBe("tpu.nodes");
    expect(issue.message).toContain("1, 2, 4, 8, 16, 32, 64");
    expect(issue.message).toContain(String(nodes));
  });

  it.each(["tpu7x-2", "tpu7x-12", "tpu7x-24", "tpu7x-1024", "tpu7x-", "v6e-8", "tpu7x-16x"])(
    "accelerator %s is not a TPU7x slice; the message lists the valid ones",
    (accelerator) => {
      const issue = refuse({ generation: "v7", accelerator });
      expect(issue.path).toBe("tpu.accelerator");
      for (const valid of V7_ACCELERATORS) expect(issue.message).toContain(valid);
    },
  );

  it("refuses --nodes that disagree with the named slice; replicas give more copies", () => {
    expect(plan({ generation: "v7", accelerator: "tpu7x-16", nodes: 2 }).hosts).toBe(2);
    const issue = refuse({ generation: "v7", accelerator: "tpu7x-16", nodes: 4 });
    expect(issue.path).toBe("tpu.nodes");
    expect(issue.message).toMatch(/must be 2 \(got 4\)/);
    expect(plan({ generation: "v7", nodes: 2, replicas: 3 }).replicas).toBe(3);
  });

  it("--topology names a TPU7x slice only, and must agree with --accelerator", () => {
    expect(refuse({ generation: "v7", topology: "3x3x3" }).message).toContain("2x2x1, 2x2x2, 2x2x4");
    expect(refuse({ generation: "v7", topology: "2x2x2", accelerator: "tpu7x-32" }).message).toContain("2x2x2 is tpu7x-16, not tpu7x-32");
    expect(refuse({ generation: "v6e", topology: "2x2x2" }).path).toBe("tpu.topology");
  });

  it.each([
    ["v7x-16", "read as 16 chips it is tpu7x-32, read as 16 TensorCores it is tpu7x-16"],
    ["v7-8", "read as 8 chips it is tpu7x-16, read as 8 TensorCores it is tpu7x-8"],
    ["tpu-v7x-256", "read as 256 chips it is tpu7x-512, read as 256 TensorCores it is tpu7x-256"],
    ["v7x-512", "read as 512 chips it is no TPU7x slice, read as 512 TensorCores it is tpu7x-512"],
  ])("v7x-N is ambiguous: %s gives both readings", (raw, readings) => {
    const message = ambiguousV7(raw);
    expect(message).toContain(readings);
    expect(message).toContain("--topology");
  });
});

describe("--nodes must be a positive whole number", () => {
  it.each([
    { generation: "v6e" as const, nodes: 0 },
    { generation: "v6e" as const, nodes: -4 },
    { generation: "v6e" as const, nodes: 2.5 },
    { generation: "v7" as const, nodes: 0 },
    { generation: "v7" as const, nodes: Number.NaN },
  ])("$generation --nodes $nodes", (req) => {
    const issue = refuse(req);
    expect(issue.path).toBe("tpu.nodes");
    expect(issue.message).toMatch(/positive whole number/);
  });
});

describe("accelerator names", () => {
  it.each([
    ["v6e-32", "v6e-32"],
    ["tpu-v6e-32", "v6e-32"],
    ["V6E-8", "v6e-8"],
    [" v6e-4 ", "v6e-4"],
    ["tpu7x-16", "tpu7x-16"],
    // v7x-N is never read one way or the other (ambiguousV7 refuses it).
    ["v7x-16", "v7x-16"],
    ["TPU7X-8", "tpu7x-8"],
    ["v5e-8", "v5e-8"],
  ])("normaliseAccelerator(%j) = %j", (raw, want) => {
    expect(normaliseAccelerator(raw)).toBe(want);
  });

  it.each([
    ["v6e-8", "v6e"],
    ["tpu7x-16", "v7"],
    ["v5e-8", undefined],
    ["v5p-8", undefined],
    ["a100", undefined],
  ])("generationOf(%j) = %j", (accelerator, want) => {
    expect(generationOf(accelerator)).toBe(want);
  });

  it("lists exactly the slices of tpu.md", () => {
    expect(V6E_ACCELERATORS).toEqual(["v6e-1", "v6e-4", "v6e-8", "v6e-16", "v6e-32", "v6e-64", "v6e-128", "v6e-256"]);
    expect(V7_ACCELERATORS).toEqual(["tpu7x-8", "tpu7x-16", "tpu7x-32", "tpu7x-64", "tpu7x-128", "tpu7x-256", "tpu7x-512"]);
  });

  it.each([
    ["us-east5-b", "us-east5"],
    ["us-central1-c", "us-central1"],
    ["europe-west4-a", "europe-west4"],
    ["southamerica-west1-a", "southamerica-west1"],
  ])("regionOf(%j) = %j", (zone, region) => {
    expect(regionOf(zone)).toBe(region);
  });
});

describe("--tp-size is derived and checked against the slice", () => {
  const flags = (data: unknown): ConfigSource => ({ label: "flags", keyName: (p) => p, data });

  it.each([
    { tpu: { nodes: 1 }, tp: 8 },
    { tpu: { nodes: 2 }, tp: 4 },
    { tpu: { nodes: 8 }, tp: 32 },
    { tpu: { accelerator: "v6e-32", nodes: 8 }, tp: 32 },
    { tpu: { generation: "v7", nodes: 4 }, tp: 32 },
  ])("$tpu → tp-size $tp, and giving exactly that is accepted", ({ tpu, tp }) => {
    const derived = resolveConfig([flags({ tpu })]);
    expect(derived.ok && derived.config.server.tpSize).toBe(tp);
    const given = resolveConfig([flags({ tpu, server: { tpSize: tp } })]);
    expect(given.ok && given.config.server.tpSize).toBe(tp);
  });

  it.each([
    { tpu: { nodes: 2 }, given: 8, required: 4 },
    { tpu: { nodes: 8 }, given: 8, required: 32 },
    { tpu: { generation: "v7", nodes: 2 }, given: 8, required: 16 },
  ])("$tpu with --tp-size $given is refused, naming $required", ({ tpu, given, required }) => {
    const r = resolveConfig([flags({ tpu, server: { tpSize: given } })]);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.issues).toEqual([{ path: "server.tpSize", message: expect.stringContaining(`must be ${required}`) }]);
  });
});
