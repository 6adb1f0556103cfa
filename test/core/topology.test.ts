import { describe, expect, it } from "vitest";
import { type ConfigSource, resolveConfig } from "../../src/core/config.js";
import {
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

/** What a user cares about: the slice, how many of them, hosts (--nnodes), --tp-size and what SkyPilot is asked for. */
function summary(t: Topology) {
  return {
    accelerator: t.slice.accelerator,
    topology: t.slice.topology,
    slices: t.slices,
    hosts: t.hosts,
    tpSize: t.tpSize,
    sky: t.sky,
    warned: t.warnings.length > 0,
  };
}

describe("v6e: --nodes alone", () => {
  const v6e = (accelerator: string, topology: string, slices: number, hosts: number, tpSize: number, warned = false) => ({
    accelerator,
    topology,
    slices,
    hosts,
    tpSize,
    sky: { accelerators: `tpu-${accelerator}`, instanceType: null, numNodes: slices },
    warned,
  });
  it.each([
    { nodes: undefined, want: v6e("v6e-8", "2x4", 1, 1, 8) },
    { nodes: 1, want: v6e("v6e-8", "2x4", 1, 1, 8) },
    // One multi-host slice of 4 × nodes chips; SkyPilot num_nodes 1 (setup and run go to every host).
    { nodes: 4, want: v6e("v6e-16", "4x4", 1, 4, 16) },
    { nodes: 8, want: v6e("v6e-32", "4x8", 1, 8, 32) },
    { nodes: 16, want: v6e("v6e-64", "8x8", 1, 16, 64) },
    { nodes: 32, want: v6e("v6e-128", "8x16", 1, 32, 128) },
    { nodes: 64, want: v6e("v6e-256", "16x16", 1, 64, 256) },
    // Any other count: that many separate single-host v6e-4 slices, joined over the data-centre network.
    { nodes: 2, want: v6e("v6e-4", "2x2", 2, 2, 8, true) },
    { nodes: 3, want: v6e("v6e-4", "2x2", 3, 3, 12, true) },
    { nodes: 5, want: v6e("v6e-4", "2x2", 5, 5, 20, true) },
    { nodes: 6, want: v6e("v6e-4", "2x2", 6, 6, 24, true) },
    { nodes: 12, want: v6e("v6e-4", "2x2", 12, 12, 48, true) },
  ])("--nodes $nodes → $want.slices × $want.accelerator, tp $want.tpSize", ({ nodes, want }) => {
    expect(summary(plan({ generation: "v6e", nodes }))).toEqual(want);
  });

  it("warns for --nodes 2 that the hosts are separate slices and names the fast alternatives", () => {
    const t = plan({ generation: "v6e", nodes: 2 });
    expect(t.warnings).toHaveLength(1);
    expect(t.warnings[0]).toMatch(/2 separate v6e-4 slices/);
    expect(t.warnings[0]).toMatch(/data-centre network/);
    expect(t.warnings[0]).toMatch(/--nodes 4, 8, 16, 32 or 64/);
  });

  it("does not warn for a single multi-host slice", () => {
    expect(plan({ generation: "v6e", nodes: 8 }).warnings).toEqual([]);
  });
});

describe("v6e: --accelerator with --nodes", () => {
  it.each([
    { accelerator: "v6e-1", nodes: undefined, slices: 1, hosts: 1, tpSize: 1, numNodes: 1 },
    { accelerator: "v6e-4", nodes: undefined, slices: 1, hosts: 1, tpSize: 4, numNodes: 1 },
    { accelerator: "v6e-4", nodes: 3, slices: 3, hosts: 3, tpSize: 12, numNodes: 3 },
    { accelerator: "v6e-8", nodes: 2, slices: 2, hosts: 2, tpSize: 16, numNodes: 2 },
    { accelerator: "v6e-16", nodes: undefined, slices: 1, hosts: 4, tpSize: 16, numNodes: 1 },
    { accelerator: "v6e-32", nodes: undefined, slices: 1, hosts: 8, tpSize: 32, numNodes: 1 },
    { accelerator: "v6e-32", nodes: 8, slices: 1, hosts: 8, tpSize: 32, numNodes: 1 },
    { accelerator: "v6e-32", nodes: 16, slices: 2, hosts: 16, tpSize: 64, numNodes: 2 },
    { accelerator: "v6e-256", nodes: undefined, slices: 1, hosts: 64, tpSize: 256, numNodes: 1 },
  ])(
    "$accelerator --nodes $nodes → $slices slice(s), $hosts hosts, tp $tpSize",
    ({ accelerator, nodes, slices, hosts, tpSize, numNodes }) => {
      const t = plan({ generation: "v6e", accelerator, nodes });
      expect(t.slice.accelerator).toBe(accelerator);
      expect({ slices: t.slices, hosts: t.hosts, tpSize: t.tpSize }).toEqual({ slices, hosts, tpSize });
      expect(t.sky).toEqual({ accelerators: `tpu-${accelerator}`, instanceType: null, numNodes });
      expect(t.warnings.length > 0).toBe(slices > 1);
    },
  );

  it.each([
    { accelerator: "v6e-32", nodes: 6, per: 8, multiples: "8, 16, 24" },
    { accelerator: "v6e-32", nodes: 4, per: 8, multiples: "8, 16, 24" },
    { accelerator: "v6e-16", nodes: 2, per: 4, multiples: "4, 8, 12" },
    { accelerator: "v6e-64", nodes: 24, per: 16, multiples: "16, 32, 48" },
  ])("$accelerator --nodes $nodes is refused: nodes must be a multiple of $per", ({ accelerator, nodes, per, multiples }) => {
    const issue = refuse({ generation: "v6e", accelerator, nodes });
    expect(issue.path).toBe("tpu.nodes");
    expect(issue.message).toContain(`multiple of ${per}`);
    expect(issue.message).toContain(multiples);
    expect(issue.message).toContain(`got ${nodes}`);
  });

  it.each(["v6e-2", "v6e-3", "v6e-12", "v6e-512", "v6e-", "v6e-x", "v6e-8.0", "tpu7x-8"])(
    "%s is not a v6e slice; the message lists every valid one",
    (accelerator) => {
      const issue = refuse({ generation: "v6e", accelerator });
      expect(issue.path).toBe("tpu.accelerator");
      expect(issue.message).toContain(`'${accelerator}'`);
      for (const valid of ["v6e-1", "v6e-4", "v6e-8", "v6e-16", "v6e-32", "v6e-64", "v6e-128", "v6e-256"]) {
        expect(issue.message).toContain(valid);
      }
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
      slices: 1,
      hosts: nodes,
      // 4 chips per VM × 2 JAX devices per chip.
      tpSize: 8 * nodes,
      sky: { accelerators: null, instanceType: "tpu7x-standard-4t", numNodes: nodes },
      warned: false,
    });
    expect(t.slice).toMatchObject({ vmsPerSlice: nodes, chipsPerSlice: 4 * nodes, devicesPerChip: 2 });
    // The same slice asked for by name plans identically.
    expect(plan({ generation: "v7", accelerator })).toEqual(t);
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
      for (const valid of ["tpu7x-8", "tpu7x-16", "tpu7x-32", "tpu7x-64", "tpu7x-128", "tpu7x-256", "tpu7x-512"]) {
        expect(issue.message).toContain(valid);
      }
    },
  );

  it("refuses --nodes that disagree with the named slice, and several TPU7x slices", () => {
    expect(plan({ generation: "v7", accelerator: "tpu7x-16", nodes: 2 }).hosts).toBe(2);
    const issue = refuse({ generation: "v7", accelerator: "tpu7x-16", nodes: 4 });
    expect(issue.path).toBe("tpu.nodes");
    expect(issue.message).toMatch(/must be 2 \(got 4\)/);
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
    ["v7-16", "tpu7x-16"],
    ["v7x-16", "tpu7x-16"],
    ["tpu-v7x-16", "tpu7x-16"],
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
    { tpu: { nodes: 2 }, tp: 8 },
    { tpu: { nodes: 8 }, tp: 32 },
    { tpu: { accelerator: "v6e-32", nodes: 16 }, tp: 64 },
    { tpu: { generation: "v7", nodes: 4 }, tp: 32 },
  ])("$tpu → tp-size $tp, and giving exactly that is accepted", ({ tpu, tp }) => {
    const derived = resolveConfig([flags({ tpu })]);
    expect(derived.ok && derived.config.server.tpSize).toBe(tp);
    const given = resolveConfig([flags({ tpu, server: { tpSize: tp } })]);
    expect(given.ok && given.config.server.tpSize).toBe(tp);
  });

  it.each([
    { tpu: { nodes: 2 }, given: 4, required: 8 },
    { tpu: { nodes: 8 }, given: 8, required: 32 },
    { tpu: { generation: "v7", nodes: 2 }, given: 8, required: 16 },
  ])("$tpu with --tp-size $given is refused, naming $required", ({ tpu, given, required }) => {
    const r = resolveConfig([flags({ tpu, server: { tpSize: given } })]);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.issues).toEqual([{ path: "server.tpSize", message: expect.stringContaining(`must be ${required}`) }]);
  });
});
