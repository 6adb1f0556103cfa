// The optimizer's view of the simulated catalog: which (resources, zone) pairs can run a task, in the
// order provisioning tries them, or SkyPilot's error when none can.
import { parseV6e, regionOfZone, TPU7X_INSTANCE_TYPE, TPU7X_ZONES, V6E_ZONES, v6eHostsPerNode } from "./catalog.js";
import { exc } from "./errors.js";
import { pyRepr, renderTable } from "./pyfmt.js";
import { getNested, resourcesRepr, type Resources, type Task } from "./task.js";

export interface Candidate {
  kind: "v6e" | "tpu7x";
  zone: string;
  region: string;
  accelerator: string | null;
  instanceType: string;
  hostsPerNode: number;
  useSpot: boolean;
  runtimeVersion: string | null;
  labels: Record<string, string>;
  ports: string[];
  diskSize: number;
  taskRepr: string; // Resources.__repr__ of the request
  launchableRepr: string; // with the instance type
  acceleratorsRepr: string | null;
  resourcesStr: string;
  resourcesStrFull: string;
  shortRepr: string; // "[spot](gpus=tpu-v6e-16:1, TPU-VM, ...)" for tables
}

const TPU_VM_CPUS = 96;
const TPU_VM_MEM = 334;
const TPU7X_CPUS = 224;
const TPU7X_MEM = 960;

function fits(req: string | null, have: number): boolean {
  if (req === null) return true;
  const m = /^(\d+(?:\.\d+)?)(\+?)$/.exec(req.trim());
  if (!m) return false;
  const n = Number(m[1]);
  return m[2] === "+" ? n <= have : n === have;
}

function strings(numNodes: number, r: Resources, kind: "v6e" | "tpu7x"): { short: string; full: string; simple: string } {
  const spot = r.useSpot ? "[spot]" : "";
  const core =
    kind === "v6e" ? `gpus=${r.accelerator}:${r.acceleratorCount}, TPU-VM` : `cpus=${TPU7X_CPUS}, mem=${TPU7X_MEM}, ${TPU7X_INSTANCE_TYPE}`;
  const disk = r.diskSize ?? 256;
  const ports = r.ports.length > 0 ? `, ports=${pyRepr(r.ports)}` : "";
  return {
    simple: `${numNodes}x${spot}(${core}, ...)`,
    full: `${numNodes}x${spot}(${core}, disk=${disk}${ports})`,
    short: `${spot}(${core}, ...)`,
  };
}

export function catalogError(task: Task, r: Resources): Error {
  return exc.resourcesUnavailable(
    `Catalog does not contain any instances satisfying the request: ${task.numNodes}x ${resourcesRepr(r)}.\n` +
      "To fix: relax or change the resource requirements.\n\n" +
      "Hint: sky gpus list to list available accelerators.\n" +
      "      sky check to check the enabled clouds.",
  );
}

// Every feasible (resources, zone), cheapest region first; `ordered` keeps the user's order.
export function optimize(task: Task, config: Record<string, unknown>): Candidate[] {
  const out: Candidate[] = [];
  let firstError: Error | null = null;
  for (const r of task.resources) {
    try {
      out.push(...candidatesFor(task, r, config));
    } catch (e) {
      firstError ??= e as Error;
    }
  }
  if (out.length === 0) throw firstError ?? exc.resourcesUnavailable("No launchable resource found.");
  return out;
}

function candidatesFor(task: Task, r: Resources, config: Record<string, unknown>): Candidate[] {
  if (r.cloud !== null && r.cloud !== "gcp") {
    throw exc.resourcesUnavailable(
      `No launchable resource found for task ${task.name ?? "sky-cmd"}.\n` +
        `To fix: ${r.cloud} is not enabled. Run \`sky check ${r.cloud}\` to enable it, or change the cloud requirement.`,
    );
  }
  const mig = getNested(config, ["gcp", "managed_instance_group"]);
  let kind: "v6e" | "tpu7x";
  let zones: string[];
  let hostsPerNode: number;
  if (r.accelerator !== null) {
    const chips = parseV6e(r.accelerator);
    const tpuVm = r.acceleratorArgs?.tpu_vm !== false;
    if (chips === null || r.acceleratorCount !== 1 || !tpuVm) throw catalogError(task, r);
    if (!fits(r.cpus, TPU_VM_CPUS) || !fits(r.memory, TPU_VM_MEM)) throw catalogError(task, r);
    kind = "v6e";
    zones = V6E_ZONES;
    hostsPerNode = v6eHostsPerNode(chips);
  } else if (r.instanceType === TPU7X_INSTANCE_TYPE) {
    if (!fits(r.cpus, TPU7X_CPUS) || !fits(r.memory, TPU7X_MEM)) throw catalogError(task, r);
    const runDuration = getNested(config, ["gcp", "managed_instance_group", "run_duration"]);
    if (mig === undefined || mig === null || typeof runDuration !== "number") {
      throw exc.invalidConfig(
        `Instance type ${TPU7X_INSTANCE_TYPE} is provisioned through a GCE managed instance group with a TPU workload policy, ` +
          "which needs `gcp.managed_instance_group.run_duration` (seconds) in the task's `config:` or ~/.sky/config.yaml.",
      );
    }
    if (r.useSpot) {
      throw exc.notSupported(
        "The following features are not supported by GCP:\n\tspot_instance: Managed Instance Group with DWS does not support spot instances.",
      );
    }
    checkTpu7xFlexStart(task, r, config);
    kind = "tpu7x";
    zones = TPU7X_ZONES;
    hostsPerNode = 1;
  } else if (r.instanceType !== null) {
    throw catalogError(task, r);
  } else {
    // A real GCP would start a CPU VM here; the simulated cloud only has TPU capacity.
    throw exc.notSupported(
      `The simulated cloud offers only TPU v6e slices (accelerators: tpu-v6e-N) and TPU7x VMs (instance_type: ${TPU7X_INSTANCE_TYPE}); ` +
        `the request ${task.numNodes}x ${resourcesRepr(r)} would need a CPU VM.`,
    );
  }
  const filtered = zones.filter((z) => (r.region === null || regionOfZone(z) === r.region) && (r.zone === null || z === r.zone));
  if (filtered.length === 0) throw catalogError(task, r);
  const s = strings(task.numNodes, r, kind);
  const launchable: Resources = { ...r, instanceType: kind === "v6e" ? "TPU-VM" : TPU7X_INSTANCE_TYPE };
  return filtered.map((zone) => ({
    kind,
    zone,
    region: regionOfZone(zone),
    accelerator: r.accelerator,
    instanceType: kind === "v6e" ? "TPU-VM" : TPU7X_INSTANCE_TYPE,
    hostsPerNode,
    useSpot: r.useSpot,
    runtimeVersion: kind === "v6e" ? String(r.acceleratorArgs?.runtime_version ?? "v2-alpha-tpuv6e") : null,
    labels: r.labels,
    ports: r.ports,
    diskSize: r.diskSize ?? 256,
    taskRepr: resourcesRepr(r),
    launchableRepr: resourcesRepr(launchable, true),
    acceleratorsRepr: r.accelerator === null ? null : pyRepr({ [r.accelerator]: r.acceleratorCount }),
    resourcesStr: s.simple,
    resourcesStrFull: s.full,
    shortRepr: s.short,
  }));
}

// The optimizer's "Considered resources" table for the chosen candidate.
export function consideredTable(numNodes: number, c: Candidate): string {
  const cpus = c.kind === "v6e" ? TPU_VM_CPUS : TPU7X_CPUS;
  const mem = c.kind === "v6e" ? TPU_VM_MEM : TPU7X_MEM;
  const gpus = c.accelerator === null ? "-" : `${c.accelerator}:1`;
  const table = renderTable(
    [" INFRA", "INSTANCE", "vCPUs", "Mem(GB)", "GPUS", "COST ($)", "CHOSEN"],
    [[` GCP (${c.zone})`, `${c.instanceType}${c.useSpot ? "[Spot]" : ""}`, String(cpus), String(mem), gpus, "-", "✔"]],
  );
  const width = Math.max(...table.split("\n").map((l) => [...l].length));
  const rule = "-".repeat(width);
  const [header, ...rows] = table.split("\n");
  return [`Considered resources (${numNodes} node${numNodes === 1 ? "" : "s"}):`, rule, header ?? "", rule, ...rows, rule].join("\n");
}

// The slice shapes Compute Engine offers for tpu7x-standard-4t, topology → VMs: the TPU7x-capable fork's
// sky/provision/gcp/mig_utils.py `_COMPUTE_TPU_TOPOLOGY_TO_VM_COUNT` (docs/upstream/skypilot.md §7).
const TPU7X_TOPOLOGY_VMS: Record<string, number> = {
  "2x2x1": 1,
  "2x2x2": 2,
  "2x2x4": 4,
  "2x4x4": 8,
  "4x4x4": 16,
  "4x4x8": 32,
  "4x8x8": 64,
  "8x8x8": 128,
  "8x8x16": 256,
  "8x16x16": 512,
};

/**
 * What the TPU7x-capable fork checks before it provisions a TPU MIG, with its messages: mig_utils.py
 * `validate_tpu_flex_start_config` (ValueError: Flex-start zone, topology pattern, 3 dimensions, a supported
 * shape, VMs = num_nodes). Two more come from the same source's notes, wording inferred: a TPU MIG without
 * `accelerator_topology` is refused, and Compute Engine refuses a placement policy on a tpu7x MIG ("…with
 * placement policy is not supported. Use workload policy instead.").
 */
function checkTpu7xFlexStart(task: Task, r: Resources, config: Record<string, unknown>): void {
  const machine = TPU7X_INSTANCE_TYPE;
  const topology = getNested(config, ["gcp", "managed_instance_group", "accelerator_topology"]);
  if (typeof topology !== "string" || topology === "") {
    throw exc.value(
      `A TPU managed instance group (${machine}) needs config.gcp.managed_instance_group.accelerator_topology, e.g. '2x2x2'.`,
    );
  }
  if (getNested(config, ["gcp", "placement_policy"]) !== undefined) {
    throw exc.runtime(
      `Compute Engine refused the instance group for ${machine}: creating a TPU managed instance group with placement policy is not supported. Use workload policy instead.`,
    );
  }
  const zone = r.zone ?? TPU7X_ZONES[0] ?? "";
  if (!TPU7X_ZONES.includes(zone)) {
    throw exc.value(`'${machine}' does not support TPU Flex-start in '${zone}'. Use one of: ${[...TPU7X_ZONES].sort().join(", ")}.`);
  }
  if (!/^[1-9][0-9]*(?:x[1-9][0-9]*)+$/.test(topology)) {
    throw exc.value(`Invalid TPU accelerator topology '${topology}'. Expected dimensions separated by "x", such as "4x8" or "2x2x2".`);
  }
  if (topology.split("x").length !== 3) {
    throw exc.value(`'${machine}' requires a 3D accelerator topology; got '${topology}'.`);
  }
  const vms = TPU7X_TOPOLOGY_VMS[topology];
  if (vms === undefined) {
    throw exc.value(
      `Accelerator topology '${topology}' is not supported with '${machine}' on Compute Engine. Supported topologies: ${Object.keys(TPU7X_TOPOLOGY_VMS).join(", ")}.`,
    );
  }
  if (vms !== task.numNodes) {
    throw exc.value(`Accelerator topology '${topology}' requires ${vms} '${machine}' VMs, but num_nodes is ${task.numNodes}.`);
  }
}
