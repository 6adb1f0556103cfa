// What `--nodes` and `--accelerator` mean on each TPU generation (tpu.md §1-2, skypilot.md §6-7).
// Pure: no I/O.

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
  slice: SliceShape;
  /** Number of slices; SkyPilot's `num_nodes` for v6e. */
  slices: number;
  /** Hosts serving the model: sglang-jax `--nnodes`. */
  hosts: number;
  /** Global JAX device count: sglang-jax `--tp-size`. */
  tpSize: number;
  /** What SkyPilot is asked for. */
  sky: { accelerators: string | null; instanceType: string | null; numNodes: number };
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

export const V6E_ACCELERATORS = Object.keys(V6E_SHAPES).map((c) => `v6e-${c}`);
export const V7_ACCELERATORS = Object.keys(V7_TOPOLOGY_BY_VMS).map((vms) => `tpu7x-${Number(vms) * 8}`);
const V6E_MULTIHOST_NODES = [4, 8, 16, 32, 64];
const V7_NODES = Object.keys(V7_TOPOLOGY_BY_VMS).map(Number);

export const V7_INSTANCE_TYPE = "tpu7x-standard-4t";

/** Accepts `v6e-32`, `tpu-v6e-32` (SkyPilot's spelling), `tpu7x-16`, `v7-16`/`v7x-16` (TensorCores). */
export function normaliseAccelerator(raw: string): string {
  const s = raw.trim().toLowerCase();
  if (s.startsWith("tpu-v6e-")) return s.slice(4);
  const v7 = /^(?:v7x?|tpu-v7x?)-(\d+)$/.exec(s);
  if (v7) return `tpu7x-${v7[1]}`;
  return s;
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

function result(generation: Generation, slice: SliceShape, slices: number, warnings: string[]): TopologyResult {
  const hosts = slice.vmsPerSlice * slices;
  const tpSize = slice.chipsPerSlice * slice.devicesPerChip * slices;
  const sky =
    generation === "v6e"
      ? { accelerators: `tpu-${slice.accelerator}`, instanceType: null, numNodes: slices }
      : { accelerators: null, instanceType: V7_INSTANCE_TYPE, numNodes: hosts };
  return { ok: true, topology: { generation, slice, slices, hosts, tpSize, sky, warnings } };
}

export interface TopologyRequest {
  generation: Generation;
  accelerator?: string | undefined;
  nodes?: number | undefined;
}

export function planTopology(req: TopologyRequest): TopologyResult {
  const { generation, nodes } = req;
  if (nodes !== undefined && (!Number.isInteger(nodes) || nodes < 1)) {
    return fail("tpu.nodes", `must be a positive whole number of TPU VM hosts (got ${nodes})`);
  }
  return generation === "v6e" ? planV6e(req.accelerator, nodes) : planV7(req.accelerator, nodes);
}

function planV6e(accelerator: string | undefined, nodes: number | undefined): TopologyResult {
  const warnings: string[] = [];
  if (accelerator === undefined) {
    const n = nodes ?? 1;
    if (n === 1) return result("v6e", v6eShapeOrThrow("v6e-8"), 1, warnings);
    if (V6E_MULTIHOST_NODES.includes(n)) return result("v6e", v6eShapeOrThrow(`v6e-${4 * n}`), 1, warnings);
    warnings.push(separateSlicesWarning(n, "v6e-4"));
    return result("v6e", v6eShapeOrThrow("v6e-4"), n, warnings);
  }
  const shape = v6eShape(accelerator);
  if (!shape) {
    return fail("tpu.accelerator", `'${accelerator}' is not a v6e slice; choose one of ${V6E_ACCELERATORS.join(", ")}`);
  }
  const n = nodes ?? shape.vmsPerSlice;
  if (n % shape.vmsPerSlice !== 0) {
    const multiples = [1, 2, 3].map((k) => k * shape.vmsPerSlice).join(", ");
    return fail(
      "tpu.nodes",
      `${accelerator} has ${shape.vmsPerSlice} hosts per slice, so --nodes must be a multiple of ${shape.vmsPerSlice} (${multiples}, ...); got ${n}`,
    );
  }
  const slices = n / shape.vmsPerSlice;
  if (slices > 1) warnings.push(separateSlicesWarning(slices, accelerator));
  return result("v6e", shape, slices, warnings);
}

function planV7(accelerator: string | undefined, nodes: number | undefined): TopologyResult {
  if (accelerator !== undefined) {
    const m = /^tpu7x-(\d+)$/.exec(accelerator);
    const vms = m ? Number(m[1]) / 8 : Number.NaN;
    const shape = Number.isInteger(vms) ? v7Shape(vms) : undefined;
    if (!shape) {
      return fail("tpu.accelerator", `'${accelerator}' is not a TPU7x slice; choose one of ${V7_ACCELERATORS.join(", ")}`);
    }
    if (nodes !== undefined && nodes !== shape.vmsPerSlice) {
      return fail(
        "tpu.nodes",
        `${accelerator} is one slice of ${shape.vmsPerSlice} hosts, so --nodes must be ${shape.vmsPerSlice} (got ${nodes}); ` +
          "several TPU7x slices in one deployment are not supported",
      );
    }
    return result("v7", shape, 1, []);
  }
  const n = nodes ?? 1;
  const shape = v7Shape(n);
  if (!shape) {
    return fail("tpu.nodes", `TPU7x slices have ${V7_NODES.join(", ")} hosts; got --nodes ${n}`);
  }
  return result("v7", shape, 1, []);
}

function v6eShapeOrThrow(accelerator: string): SliceShape {
  const shape = v6eShape(accelerator);
  if (!shape) throw new Error(`unknown v6e shape ${accelerator}`);
  return shape;
}

function separateSlicesWarning(slices: number, accelerator: string): string {
  return (
    `${slices} separate ${accelerator} slices: their hosts are joined over the data-centre network, not ICI. ` +
    "For one fast slice use --nodes 4, 8, 16, 32 or 64 (multi-host v6e slices)."
  );
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
