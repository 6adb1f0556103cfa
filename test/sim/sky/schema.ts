// The parts of SkyPilot's task/resources/config JSON schemas (sky/utils/schemas.py) that tpu-deploy can
// hit, and common_utils.validate_schema's way of reporting the first violation jsonschema finds.
import { exc } from "./errors.js";
import { getCloseMatches, pyRepr, pyStr } from "./pyfmt.js";

export interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  additionalProperties?: false | Schema;
  patternProperties?: Record<string, Schema>;
  anyOf?: Schema[];
  pattern?: string;
  patternFlags?: string;
  items?: Schema;
  required?: string[];
  maxProperties?: number;
  enumCI?: string[];
}

const STR: Schema = { type: "string" };
const INT: Schema = { type: "integer" };
const BOOL: Schema = { type: "boolean" };
const OBJ: Schema = { type: "object" };
const NUM_OR_STR: Schema = { anyOf: [{ type: "string" }, { type: "number" }] };
const PORT: Schema = { anyOf: [{ type: "string", pattern: "^\\d+(-\\d+)?$" }, { type: "integer" }] };

export const INFRA_PATTERN = "^(?:(?!k8s|kubernetes|ssh)(?:[a-zA-Z0-9]+|\\*)(?:/[a-zA-Z0-9\\-*_]+){0,2}|(?:k8s|kubernetes|ssh)(?:/.+)?)$";

const ENV_KEY = "^[a-zA-Z_][a-zA-Z0-9_]*$";

function singleResources(): Record<string, Schema> {
  return {
    infra: { type: "string", pattern: INFRA_PATTERN, patternFlags: "i" },
    cloud: STR,
    region: STR,
    zone: STR,
    cpus: NUM_OR_STR,
    memory: NUM_OR_STR,
    accelerators: {
      anyOf: [{ type: "string" }, { type: "object", maxProperties: 1, additionalProperties: { type: ["number", "null"] } }],
    },
    gpus: {
      anyOf: [{ type: "string" }, { type: "object", maxProperties: 1, additionalProperties: { type: ["number", "null"] } }],
    },
    instance_type: STR,
    use_spot: BOOL,
    job_recovery: { anyOf: [STR, OBJ] },
    volumes: { type: "array" },
    disk_size: INT,
    disk_tier: { type: "string", enumCI: ["low", "medium", "high", "ultra", "best", "none"] },
    network_tier: { type: "string", enumCI: ["standard", "best"] },
    ports: { anyOf: [PORT.anyOf?.[0] ?? STR, INT, { type: "array", items: PORT }] },
    labels: { type: "object", additionalProperties: STR },
    accelerator_args: {
      type: "object",
      additionalProperties: false,
      properties: { runtime_version: STR, tpu_name: STR, tpu_vm: BOOL, gcp_queued_resource: BOOL },
    },
    image_id: { anyOf: [STR, OBJ] },
    autostop: { anyOf: [BOOL, INT, STR, OBJ] },
    ephemeral_storage: NUM_OR_STR,
    max_hourly_cost: { type: "number" },
    local_disk: STR,
    priority: INT,
    priority_class: STR,
    _docker_login_config: OBJ,
    _docker_username_for_runpod: STR,
    _is_image_managed: BOOL,
    _requires_fuse: BOOL,
    _cluster_config_overrides: OBJ,
    _no_missing_accel_warnings: BOOL,
  };
}

export function resourcesSchema(): Schema {
  const single = singleResources();
  return {
    type: "object",
    additionalProperties: false,
    properties: {
      ...single,
      any_of: { type: "array", items: { type: "object", additionalProperties: false, properties: single } },
      ordered: { type: "array", items: { type: "object", additionalProperties: false, properties: single } },
    },
  };
}

export function taskSchema(): Schema {
  const envs: Schema = { type: "object", patternProperties: { [ENV_KEY]: { type: ["string", "null"] } }, additionalProperties: false };
  return {
    type: "object",
    additionalProperties: false,
    properties: {
      name: STR,
      workdir: { anyOf: [STR, OBJ] },
      event_callback: STR,
      num_nodes: INT,
      resources: OBJ,
      file_mounts: OBJ,
      service: OBJ,
      pool: OBJ,
      setup: STR,
      run: STR,
      envs,
      secrets: { anyOf: [envs, { type: "array", items: STR }] },
      managed_secrets: OBJ,
      inputs: { type: "object", maxProperties: 1 },
      outputs: { type: "object", maxProperties: 1 },
      file_mounts_mapping: OBJ,
      config: OBJ,
      volumes: OBJ,
      volume_mounts: { type: "array" },
      api_server_access: OBJ,
      _metadata: OBJ,
    },
  };
}

// The task-level `config:` keys SkyPilot lets a task override (OVERRIDEABLE_CONFIG_KEYS_IN_TASK).
export function configSchema(): Schema {
  return {
    type: "object",
    additionalProperties: false,
    properties: {
      docker: { type: "object", additionalProperties: false, properties: { run_options: { anyOf: [STR, { type: "array" }] } } },
      nvidia_gpus: { type: "object", additionalProperties: false, properties: { disable_ecc: BOOL } },
      ssh: { type: "object", additionalProperties: false, properties: { pod_config: OBJ } },
      kubernetes: OBJ,
      gcp: {
        type: "object",
        additionalProperties: false,
        properties: {
          managed_instance_group: {
            type: "object",
            required: ["run_duration"],
            additionalProperties: false,
            // accelerator_topology(_mode): the TPU7x-capable fork's keys (docs/upstream/skypilot.md §7).
            properties: { run_duration: INT, provision_timeout: INT, accelerator_topology: STR, accelerator_topology_mode: STR },
          },
          enable_gvnic: BOOL,
          enable_gpu_direct: BOOL,
          placement_policy: STR,
        },
      },
    },
  };
}

function typeName(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

function isType(v: unknown, t: string): boolean {
  switch (t) {
    case "string":
      return typeof v === "string";
    case "integer":
      return typeof v === "number" && Number.isInteger(v);
    case "number":
      return typeof v === "number";
    case "boolean":
      return typeof v === "boolean";
    case "object":
      return typeName(v) === "object";
    case "array":
      return Array.isArray(v);
    case "null":
      return v === null || v === undefined;
    default:
      return false;
  }
}

interface Violation {
  kind: "additional" | "other";
  message: string;
  path: string;
  schema: Schema;
  instance: unknown;
  envs: boolean;
}

function firstViolation(v: unknown, s: Schema, path: string, envs = false): Violation | null {
  const other = (message: string): Violation => ({ kind: "other", message, path, schema: s, instance: v, envs });
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => isType(v, t))) {
      return other(`${pyRepr(v)} is not of type ${types.map((t) => pyStr(t)).join(", ")}`);
    }
  }
  if (s.anyOf && !s.anyOf.some((alt) => firstViolation(v, alt, path) === null)) {
    return other(`${pyRepr(v)} is not valid under any of the given schemas`);
  }
  if (typeof v === "string") {
    if (s.pattern !== undefined && !new RegExp(s.pattern, s.patternFlags ?? "").test(v)) {
      return other(`${pyRepr(v)} does not match ${pyStr(s.pattern)}`);
    }
    if (s.enumCI && !s.enumCI.includes(v.toLowerCase())) {
      return other(`${pyRepr(v)} is not one of ${pyRepr(s.enumCI)}`);
    }
  }
  if (Array.isArray(v) && s.items) {
    for (let i = 0; i < v.length; i++) {
      const e = firstViolation(v[i], s.items, `${path}[${i}]`);
      if (e) return e;
    }
  }
  if (isType(v, "object")) {
    const obj = v as Record<string, unknown>;
    for (const r of s.required ?? []) if (!(r in obj)) return other(`${pyStr(r)} is a required property`);
    if (s.maxProperties !== undefined && Object.keys(obj).length > s.maxProperties) {
      return other(`${pyRepr(v)} has too many properties`);
    }
    const known = s.properties ?? {};
    const patterns = s.patternProperties ?? {};
    const extras = Object.keys(obj).filter((k) => !(k in known) && !Object.keys(patterns).some((p) => new RegExp(p).test(k)));
    if (s.additionalProperties === false && extras.length > 0) {
      let message: string;
      if (Object.keys(patterns).length > 0) {
        const sorted = [...extras].sort();
        message = `${sorted.map(pyStr).join(", ")} ${sorted.length === 1 ? "does" : "do"} not match any of the regexes: ${Object.keys(patterns).map(pyStr).join(", ")}`;
      } else {
        message = "Additional properties are not allowed";
      }
      return { kind: "additional", message, path, schema: s, instance: v, envs };
    }
    if (typeof s.additionalProperties === "object") {
      for (const k of extras) {
        const e = firstViolation(obj[k], s.additionalProperties, `${path}.${k}`);
        if (e) return e;
      }
    }
    for (const [k, sub] of Object.entries(known)) {
      if (!(k in obj)) continue;
      const e = firstViolation(obj[k], sub, `${path}.${k}`, k === "envs" || k === "secrets");
      if (e) return e;
    }
    for (const [p, sub] of Object.entries(patterns)) {
      for (const k of Object.keys(obj)) {
        if (!new RegExp(p).test(k)) continue;
        const e = firstViolation(obj[k], sub, `${path}.${k}`);
        if (e) return e;
      }
    }
  }
  return null;
}

// common_utils.validate_schema: raises ValueError(prefix + message) for the first violation.
export function validateSchema(obj: unknown, schema: Schema, prefix: string, makeError = exc.value): void {
  const v = firstViolation(obj, schema, "$");
  if (!v) return;
  if (v.kind === "additional") {
    if (v.envs || Object.keys(v.schema.patternProperties ?? {}).length > 0) {
      throw makeError(`${prefix}The \`envs\` field contains invalid keys:\n${v.message}`);
    }
    const known = Object.keys(v.schema.properties ?? {});
    let msg = prefix;
    for (const field of Object.keys(v.instance as Record<string, unknown>)) {
      if (known.includes(field)) continue;
      const similar = getCloseMatches(field, known, 1);
      msg +=
        similar[0] !== undefined
          ? `Instead of ${pyStr(field)}, did you mean ${pyStr(similar[0])}?`
          : `Found unsupported field ${pyStr(field)}.`;
    }
    throw makeError(msg);
  }
  const message = v.message.replace(/type 'object'/g, "type 'dict'");
  throw makeError(`${prefix}${message}. Check problematic field(s): ${v.path}`);
}
