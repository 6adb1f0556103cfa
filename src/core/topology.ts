// What `--nodes`, `--replicas`, `--accelerator` and `--topology` mean on each TPU generation (docs/upstream/tpu.md §1-2,
// skypilot.md §6-7): one model per slice, more capacity from replicas. Pure: no I/O.

export type Generation = "v6e" | "v7";

export interface SliceShape {
  /** Cloud TPU accelerator type (`v6e-32`) or xpk device type for TPU7x (`tpu7x-16`). */
  accelerator: string;
  /** TPU VMs (= TPU workers = hosts) in one slice. */
  vmsPerSlice: number;
  chipsPerSlice: number;
  devicesPerChip: number;
  /** Physical topology, e.g. `4x8` or `2x2x2`. */
  topology: string;
}

export interface Topology {
  generation: Generation;
  /** The slice every replica is: sglang-jax serves one model within one slice. */
  slice: SliceShape;
  /** Independent copies of that slice, each its own SkyPilot cluster, each serving the whole model. */
  replicas: number;
  /** Hosts serving one copy of the model: sglang-jax `--nnodes` (= the slice's VMs). */
  hosts: number;
  /** JAX devices of one slice: sglang-jax `--tp-size`. */
  tpSize: number;
  /** HBM of one slice, GB. */
  hbmGb: number;
  /** What SkyPilot is asked for, per replica. */
  sky: { accelerators: string | null; instanceType: string | null; numNodes: number };
  /** One sentence for people: the slice, per-replica chips and HBM, chips billed, and why when it is not obvious. */
  layout: string;
  warnings: string[];
}

export type TopologyResult = { ok: true; topology: Topology } | { ok: false; issues: { path: string; message: string }[] };

const V6E_SHAPES: Record<number, { vms: number; topology: string }> = {
  1: { vms: 1, topology: "1x1" },
  4: { vms: 1, topology: "2x2" },
  8: { vms: 1, topology: "2x4" },
  16: { vms: 4, topology: "4x4" },
  32: { vms: 8, topology: "4x8" },
  64: { vms: 16, topology: "8x8" },
  128: { vms: 32, topology: "8x16" },
  256: { vms: 64, topology: "16x16" },
};

// TPU7x multi-host shapes by VM count (xpk system_characteristics; 4 chips per VM, 2 devices per chip).
const V7_TOPOLOGY_BY_VMS: Record<number, string> = {
  1: "2x2x1",
  2: "2x2x2",
  4: "2x2x4",
  8: "2x4x4",
  16: "4x4x4",
  32: "4x4x8",
  64: "4x8x8",
};

// HBM per chip (docs/upstream/tpu.md §1-2).
const HBM_GB_PER_CHIP: Record<Generation, number> = { v6e: 32, v7: 192 };
export const MAX_REPLICAS = 64;

export const V6E_ACCELERATORS = Object.keys(V6E_SHAPES).map((c) => `v6e-${c}`);
export const V7_ACCELERATORS = Object.keys(V7_TOPOLOGY_BY_VMS).map((vms) => `tpu7x-${Number(vms) * 8}`);
export const V7_TOPOLOGIES = Object.values(V7_TOPOLOGY_BY_VMS);
const V6E_ONE_SLICE_NODES = [1, 4, 8, 16, 32, 64];
const V7_NODES = Object.keys(V7_TOPOLOGY_BY_VMS).map(Number);

export const V7_INSTANCE_TYPE = "tpu7x-standard-4t";

/** Accepts `v6e-32`, `tpu-v6e-32` (SkyPilot's spelling) and `tpu7x-16` (xpk: TensorCores). */
export function normaliseAccelerator(raw: string): string {
  const s = raw.trim().toLowerCase();
  if (s.startsWith("tpu-v6e-")) return s.slice(4);
  return s;
}

/**
 * `v7x-N` is ambiguous: sglang-jax's cookbook says `v7x-16` for 16 chips, Google's `tpu7x-N` counts
 * TensorCores (2 per chip). Both readings, for the message that refuses it.
 */
export function ambiguousV7(raw: string): string | undefined {
  const m = /^(?:tpu-)?v7x?-(\d+)$/.exec(raw.trim().toLowerCase());
  if (!m) return undefined;
  const n = Number(m[1]);
  const asChips = V7_ACCELERATORS.find((a) => Number(a.slice(6)) === n * 2);
  const asCores = V7_ACCELERATORS.find((a) => Number(a.slice(6)) === n);
  return (
    `'${raw}' is ambiguous: read as ${n} chips it is ${asChips ?? "no TPU7x slice"}, read as ${n} TensorCores it is ${asCores ?? "no TPU7x slice"}; ` +
    `name the slice as tpu7x-<TensorCores> (${V7_ACCELERATORS.join(", ")}) or by --topology (${V7_TOPOLOGIES.join(", ")})`
  );
}

export function generationOf(accelerator: string): Generation | undefined {
  if (accelerator.startsWith("v6e-")) return "v6e";
  if (accelerator.startsWith("tpu7x-")) return "v7";
  return undefined;
}

function v6eShape(accelerator: string): SliceShape | undefined {
  const chips = Number(accelerator.slice("v6e-".length));
  const shape = V6E_SHAPES[chips];
  if (!shape || !/^v6e-\d+$/.test(accelerator)) return undefined;
  // Canonical spelling (`v6e-08` → `v6e-8`): SkyPilot only knows `tpu-v6e-8`.
  return { accelerator: `v6e-${chips}`, vmsPerSlice: shape.vms, chipsPerSlice: chips, devicesPerChip: 1, topology: shape.topology };
}

function v7Shape(vms: number): SliceShape | undefined {
  const topology = V7_TOPOLOGY_BY_VMS[vms];
  if (!topology) return undefined;
  return { accelerator: `tpu7x-${vms * 8}`, vmsPerSlice: vms, chipsPerSlice: vms * 4, devicesPerChip: 2, topology };
}

function fail(path: string, message: string): TopologyResult {
  return { ok: false, issues: [{ path, message }] };
}

function describeSlice(generation: Generation, s: SliceShape): string {
  const hbm = s.chipsPerSlice * HBM_GB_PER_CHIP[generation];
  const name = generation === "v7" ? `${s.accelerator} (${s.topology})` : s.accelerator;
  return `${name}: ${s.vmsPerSlice} host${s.vmsPerSlice === 1 ? "" : "s"}, ${s.chipsPerSlice} chips, ${hbm >= 1024 ? `${hbm / 1024} TB` : `${hbm} GB`} HBM`;
}

function result(generation: Generation, slice: SliceShape, replicas: number, why?: string): TopologyResult {
  const hosts = slice.vmsPerSlice;
  const tpSize = slice.chipsPerSlice * slice.devicesPerChip;
  const sky =
    generation === "v6e"
      ? { accelerators: `tpu-${slice.accelerator}`, instanceType: null, numNodes: 1 }
      : { accelerators: null, instanceType: V7_INSTANCE_TYPE, numNodes: hosts };
  // One sentence for the plan, the dry run, the first progress line and --json.
  const layout =
    replicas === 1
      ? `one ${describeSlice(generation, slice)}`
      : `${replicas} replicas, each one ${describeSlice(generation, slice)}, serving the whole model (${replicas * slice.chipsPerSlice} chips billed in total)${why ? `; ${why}` : ""}`;
  return {
    ok: true,
    topology: {
      generation,
      slice,
      replicas,
      hosts,
      tpSize,
      hbmGb: slice.chipsPerSlice * HBM_GB_PER_CHIP[generation],
      sky,
      layout,
      warnings: [],
    },
  };
}

export interface TopologyRequest {
  generation: Generation;
  accelerator?: string | undefined;
  /** Hosts of one slice (sglang-jax --nnodes). */
  nodes?: number | undefined;
  /** Copies of the slice; undefined when not asked for (then `--nodes N` without an N-host slice means N replicas). */
  replicas?: number | undefined;
  /** TPU7x: the slice by its topology, e.g. 2x2x2. */
  topology?: string | undefined;
}

export function planTopology(req: TopologyRequest): TopologyResult {
  const { nodes, replicas } = req;
  if (nodes !== undefined && (!Number.isInteger(nodes) || nodes < 1)) {
    return fail("tpu.nodes", `must be a positive whole number of TPU VM hosts (got ${nodes})`);
  }
  if (replicas !== undefined && (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS)) {
    return fail("replicas", `must be a whole number from 1 to ${MAX_REPLICAS} (got ${replicas})`);
  }
  if (req.topology !== undefined && req.generation !== "v7") {
    return fail("tpu.topology", "names a TPU7x slice (like 2x2x2); v6e slices are named by --accelerator (v6e-16) or --nodes");
  }
  return req.generation === "v6e" ? planV6e(req.accelerator, nodes, replicas) : planV7(req.accelerator, req.topology, nodes, replicas);
}

const ONE_SLICE_CHOICES = "--nodes 4 (one v6e-16) or --tpu v7 --nodes 2 (one 2x2x2 slice)";

function planV6e(accelerator: string | undefined, nodes: number | undefined, replicas: number | undefined): TopologyResult {
  if (accelerator === undefined) {
    const n = nodes ?? 1;
    if (V6E_ONE_SLICE_NODES.includes(n)) return result("v6e", v6eShapeOrThrow(n === 1 ? "v6e-8" : `v6e-${4 * n}`), replicas ?? 1);
    if (replicas !== undefined) {
      return fail(
        "tpu.nodes",
        `no v6e slice has ${n} hosts, and sglang-jax serves one model within one slice: --nodes is 1, 4, 8, 16, 32 or 64 with --replicas; ` +
          `or drop --replicas for ${n} replicas of one v6e-4 each; or ${ONE_SLICE_CHOICES}`,
      );
    }
    // No slice of N hosts: N single-host v6e-4 slices, each serving the model (never one model across slices).
    return result("v6e", v6eShapeOrThrow("v6e-4"), n, `no v6e slice has ${n} hosts; for one slice use ${ONE_SLICE_CHOICES}`);
  }
  const shape = v6eShape(accelerator);
  if (!shape) return fail("tpu.accelerator", `'${accelerator}' is not a v6e slice; choose one of ${V6E_ACCELERATORS.join(", ")}`);
  const n = nodes ?? shape.vmsPerSlice;
  if (n === shape.vmsPerSlice) return result("v6e", shape, replicas ?? 1);
  if (shape.vmsPerSlice === 1 && replicas === undefined) {
    return result("v6e", shape, n, `${accelerator} is one host; ${n} hosts are ${n} replicas of it`);
  }
  return fail(
    "tpu.nodes",
    `${accelerator} is one slice of ${shape.vmsPerSlice} host${shape.vmsPerSlice === 1 ? "" : "s"}, so --nodes must be ${shape.vmsPerSlice} (got ${n}); ` +
      "sglang-jax serves one model within one slice: more copies come from --replicas",
  );
}

function planV7(
  accelerator: string | undefined,
  topology: string | undefined,
  nodes: number | undefined,
  replicas: number | undefined,
): TopologyResult {
  let shape: SliceShape | undefined;
  if (topology !== undefined) {
    const vms = Object.entries(V7_TOPOLOGY_BY_VMS).find(([, t]) => t === topology)?.[0];
    shape = vms === undefined ? undefined : v7Shape(Number(vms));
    if (!shape) return fail("tpu.topology", `'${topology}' is not a TPU7x topology; choose one of ${V7_TOPOLOGIES.join(", ")}`);
  }
  if (accelerator !== undefined) {
    const m = /^tpu7x-(\d+)$/.exec(accelerator);
    const vms = m ? Number(m[1]) / 8 : Number.NaN;
    const byName = Number.isInteger(vms) ? v7Shape(vms) : undefined;
    if (!byName) return fail("tpu.accelerator", `'${accelerator}' is not a TPU7x slice; choose one of ${V7_ACCELERATORS.join(", ")}`);
    if (shape && shape.accelerator !== byName.accelerator) {
      return fail("tpu.topology", `${topology} is ${shape.accelerator}, not ${accelerator}; give one of them`);
    }
    shape = byName;
  }
  if (shape) {
    if (nodes !== undefined && nodes !== shape.vmsPerSlice) {
      return fail(
        "tpu.nodes",
        `${shape.accelerator} (${shape.topology}) is one slice of ${shape.vmsPerSlice} hosts, so --nodes must be ${shape.vmsPerSlice} (got ${nodes}); more copies come from --replicas`,
      );
    }
    return result("v7", shape, replicas ?? 1);
  }
  const n = nodes ?? 1;
  const byNodes = v7Shape(n);
  if (!byNodes)
    return fail("tpu.nodes", `TPU7x slices have ${V7_NODES.join(", ")} hosts; got --nodes ${n} (more copies come from --replicas)`);
  return result("v7", byNodes, replicas ?? 1);
}

function v6eShapeOrThrow(accelerator: string): SliceShape {
  const shape = v6eShape(accelerator);
  if (!shape) throw new Error(`unknown v6e shape ${accelerator}`);
  return shape;
}

/** `us-east5-b` → `us-east5`. */
export function regionOf(zone: string): string {
  return zone.replace(/-[a-z]$/, "");
}

export const ZONE_PATTERN = /^[a-z]+-[a-z]+[0-9]+-[a-z]$/;

// Zones offering tpu-v6e in SkyPilot's catalog v8 (skypilot.md §7), US first.
export const V6E_CATALOG_ZONES = [
  "us-east5-a",
  "us-east5-b",
  "us-east5-c",
  "us-central1-a",
  "us-central1-b",
  "us-central1-c",
  "us-central2-b",
  "us-east1-d",
  "us-east4-a",
  "us-south1-a",
  "us-south1-c",
  "us-west1-c",
  "europe-west4-a",
  "asia-east1-c",
  "asia-northeast1-b",
  "asia-south1-b",
  "asia-south1-c",
  "asia-southeast1-b",
  "southamerica-east1-c",
  "southamerica-west1-a",
];

export const DEFAULT_ZONES: Record<Generation, string[]> = {
  v6e: ["us-east5-a", "us-east5-b", "us-central1-b", "us-east1-d"],
  v7: ["us-central1-c"],
};
