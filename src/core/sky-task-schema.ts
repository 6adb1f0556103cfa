// The parts of SkyPilot's task schema a rendered task must satisfy before `sky launch` sees it
// (sky/utils/schemas.py, skypilot.md §7 and §10): SkyPilot rejects unknown keys, so do we, earlier.

const TOP_LEVEL = new Set([
  "name",
  "workdir",
  "event_callback",
  "num_nodes",
  "resources",
  "file_mounts",
  "service",
  "pool",
  "setup",
  "run",
  "envs",
  "secrets",
  "managed_secrets",
  "inputs",
  "outputs",
  "file_mounts_mapping",
  "config",
  "volumes",
  "volume_mounts",
  "api_server_access",
  "_metadata",
]);
const RESOURCES = new Set([
  "infra",
  "cloud",
  "region",
  "zone",
  "accelerators",
  "gpus",
  "accelerator_args",
  "use_spot",
  "instance_type",
  "cpus",
  "memory",
  "disk_size",
  "disk_tier",
  "network_tier",
  "local_disk",
  "ports",
  "labels",
  "image_id",
  "autostop",
  "job_recovery",
  "volumes",
  "ephemeral_storage",
  "max_hourly_cost",
  "priority",
  "priority_class",
  "any_of",
  "ordered",
]);
const ACCELERATOR_ARGS = new Set(["runtime_version", "tpu_vm", "tpu_name", "gcp_queued_resource"]);
const ENV_KEY = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const INFRA = /^(\*|[a-z0-9]+)(\/(\*|[a-z0-9-]+)(\/[a-z0-9-]+)?)?$/i;
const LABEL = /^[a-z0-9_-]{0,63}$/;

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function validateSkyTask(task: Record<string, unknown>): string[] {
  const errors: string[] = [];
  for (const k of Object.keys(task)) if (!TOP_LEVEL.has(k)) errors.push(`task: unsupported field '${k}'`);
  if (task.num_nodes !== undefined && (!Number.isInteger(task.num_nodes) || (task.num_nodes as number) < 1)) {
    errors.push("task: num_nodes must be a positive integer");
  }
  for (const section of ["setup", "run"] as const) {
    if (task[section] !== undefined && typeof task[section] !== "string") errors.push(`task: ${section} must be a string`);
  }
  const r = task.resources;
  if (r !== undefined) {
    if (!isMap(r)) errors.push("task: resources must be a mapping");
    else {
      for (const k of Object.keys(r)) if (!RESOURCES.has(k) && !k.startsWith("_")) errors.push(`resources: unsupported field '${k}'`);
      if (r.infra !== undefined && (typeof r.infra !== "string" || !INFRA.test(r.infra)))
        errors.push(`resources: infra '${String(r.infra)}' is not cloud[/region[/zone]]`);
      if (r.infra !== undefined && (r.cloud !== undefined || r.region !== undefined || r.zone !== undefined)) {
        errors.push("resources: cannot specify both infra and cloud, region, or zone");
      }
      if (r.use_spot !== undefined && typeof r.use_spot !== "boolean") errors.push("resources: use_spot must be a boolean");
      if (r.accelerator_args !== undefined) {
        if (!isMap(r.accelerator_args)) errors.push("resources: accelerator_args must be a mapping");
        else
          for (const k of Object.keys(r.accelerator_args))
            if (!ACCELERATOR_ARGS.has(k)) errors.push(`resources.accelerator_args: unsupported field '${k}'`);
      }
      if (r.labels !== undefined) {
        if (!isMap(r.labels)) errors.push("resources: labels must be a mapping");
        else
          for (const [k, v] of Object.entries(r.labels)) {
            if (!LABEL.test(k) || k.length === 0 || typeof v !== "string" || !LABEL.test(v))
              errors.push(`resources.labels: '${k}: ${String(v)}' is not a valid GCP label`);
          }
      }
    }
  }
  for (const section of ["envs", "secrets"] as const) {
    const v = task[section];
    if (v === undefined) continue;
    if (section === "secrets" && Array.isArray(v)) continue;
    if (!isMap(v)) {
      errors.push(`task: ${section} must be a mapping`);
      continue;
    }
    for (const [k, val] of Object.entries(v)) {
      if (!ENV_KEY.test(k)) errors.push(`${section}: '${k}' is not a valid variable name`);
      if (val !== null && typeof val !== "string") errors.push(`${section}.${k}: must be a string or null`);
    }
  }
  return errors;
}
