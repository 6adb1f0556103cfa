// Task YAML → task, as the SkyPilot client does it before it sends anything to the API server
// (sky.Task.from_yaml_config, sky.Resources.from_yaml_config, CLI overrides), with the same errors.
import { existsSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { DEFAULT_RUNTIME_V6E, gcpRegions, gcpZones, regionOfZone, TPU7X_INSTANCE_TYPE } from "./catalog.js";
import { exc } from "./errors.js";
import { outln } from "./io.js";
import { getCloseMatches, pyRepr, pyStr, pyToStr, renderTable } from "./pyfmt.js";
import { configSchema, resourcesSchema, taskSchema, validateSchema } from "./schema.js";

export interface Resources {
  cloud: string | null; // "gcp"
  region: string | null;
  zone: string | null;
  accelerator: string | null; // canonical, "tpu-v6e-16"
  acceleratorCount: number;
  acceleratorArgs: Record<string, unknown> | null;
  instanceType: string | null;
  useSpot: boolean;
  useSpotSpecified: boolean;
  diskSize: number | null;
  ports: string[];
  labels: Record<string, string>;
  cpus: string | null;
  memory: string | null;
}

export interface Task {
  name: string | null;
  numNodes: number;
  setup: string | null;
  run: string | null;
  envs: Record<string, string>;
  secrets: Record<string, string>;
  resources: Resources[];
  config: Record<string, unknown>;
}

type Dict = Record<string, unknown>;

function isDict(v: unknown): v is Dict {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

// PyYAML safe_load semantics: YAML 1.1 scalars (yes/no booleans), duplicate keys allowed (last wins).
export function loadYamlAll(text: string): unknown[] {
  const docs = parseAllDocuments(text, { version: "1.1", uniqueKeys: false, merge: true });
  const list = Array.isArray(docs) ? docs : [docs];
  const out: unknown[] = [];
  for (const d of list) {
    if (d.errors.length > 0) throw new YamlError(d.errors[0]?.message ?? "invalid YAML");
    out.push(d.toJS({ maxAliasCount: 1000 }));
  }
  return out;
}

export class YamlError extends Error {}

export interface EntrypointCheck {
  isYaml: boolean;
  config: unknown;
  docCount: number;
  yamlFileProvided: boolean;
  invalidReason: string;
}

// command.py _check_yaml_only.
export function checkEntrypoint(entrypoint: string): EntrypointCheck {
  const splits = entrypoint
    .trim()
    .split(/\s+/)
    .filter((x) => x !== "");
  const yamlFileProvided = splits.length === 1 && ((splits[0] ?? "").endsWith("yaml") || (splits[0] ?? "").endsWith(".yml"));
  let text: string;
  try {
    text = readFileSync(entrypoint, "utf8");
  } catch {
    let invalidReason = "";
    if (yamlFileProvided) {
      const p = entrypoint.replace(/^~(?=\/|$)/, homedir());
      if (!existsSync(p)) invalidReason = "does not exist. Please check if the path is correct.";
      else if (!statSync(p).isFile()) invalidReason = "is not a file. Please check if the path is correct.";
      else invalidReason = "yaml.safe_load() failed. Please check if the path is correct.";
    }
    return { isYaml: false, config: null, docCount: 0, yamlFileProvided, invalidReason };
  }
  try {
    const docs = loadYamlAll(text);
    const first = docs.length > 0 ? docs[0] : {};
    if (typeof first === "string") return { isYaml: false, config: null, docCount: docs.length, yamlFileProvided, invalidReason: "" };
    return { isYaml: true, config: first ?? null, docCount: docs.length, yamlFileProvided, invalidReason: "" };
  } catch (e) {
    const invalidReason = yamlFileProvided
      ? `contains an invalid configuration. Please check syntax.\n\nYAML Error: ${(e as Error).message}\n`
      : "";
    return { isYaml: false, config: null, docCount: 0, yamlFileProvided, invalidReason };
  }
}

// Task.from_yaml_config with --env/--secret overrides.
export function taskFromYamlConfig(configIn: unknown, envOverrides: [string, string][], secretOverrides: [string, string][]): Task {
  if (configIn === null || configIn === undefined) configIn = {};
  if (!isDict(configIn)) {
    throw exc.value(`${pyRepr(configIn)} is not of type 'dict'. Check problematic field(s): $`);
  }
  const config: Dict = { ...configIn };
  if (envOverrides.length > 0) {
    const envs = isDict(config.envs) ? { ...config.envs } : {};
    for (const [k, v] of envOverrides) envs[k] = v;
    config.envs = envs;
  }
  if (secretOverrides.length > 0) {
    const secrets: Dict = isDict(config.secrets)
      ? { ...config.secrets }
      : Array.isArray(config.secrets)
        ? Object.fromEntries(config.secrets.map((k) => [String(k), null]))
        : {};
    for (const [k, v] of secretOverrides) secrets[k] = v;
    config.secrets = secrets;
  }
  // Keys and values become str (None stays None), so that `PORT: 8080` is valid.
  for (const key of ["envs", "secrets"]) {
    const d = config[key];
    if (isDict(d))
      config[key] = Object.fromEntries(Object.entries(d).map(([k, v]) => [k, v === null || v === undefined ? null : pyToStr(v)]));
  }
  validateSchema(config, taskSchema(), "Invalid task YAML: ");

  const envs: Record<string, string> = {};
  for (const [k, v] of Object.entries(isDict(config.envs) ? config.envs : {})) {
    if (v === null) {
      throw exc.value(
        `Environment variable ${pyStr(k)} is None. Please set a value for it in task YAML or with --env flag. ` +
          `To set it to be empty, use an empty string (${k}: "" in task YAML or --env ${k}= in CLI).`,
      );
    }
    envs[k] = String(v);
  }
  const secretsRaw: Dict = isDict(config.secrets)
    ? config.secrets
    : Array.isArray(config.secrets)
      ? Object.fromEntries(config.secrets.map((k) => [String(k), null]))
      : {};
  const secrets: Record<string, string> = {};
  for (const [k, v] of Object.entries(secretsRaw)) {
    if (v === null) {
      throw exc.value(
        `Secret variable ${pyStr(k)} is None. Please set a value for it in task YAML or with --secret flag. ` +
          `To set it to be empty, use an empty string (${k}: "" in task YAML or --secret ${k}= in CLI).`,
      );
    }
    secrets[k] = String(v);
  }

  const name = typeof config.name === "string" ? config.name : null;
  if (name !== null && !/^[a-zA-Z0-9]+(?:[._-]{1,2}[a-zA-Z0-9]+)*$/.test(name)) {
    throw exc.value(
      `Invalid task name ${name}. Valid name: names can only contain alphanumeric characters, '_', '-' or '.', ` +
        "and must start and end with an alphanumeric character.",
    );
  }
  const numNodes = config.num_nodes === undefined || config.num_nodes === null ? 1 : (config.num_nodes as number);
  checkNumNodes(numNodes);

  const taskConfig = isDict(config.config) ? config.config : {};
  validateSchema(taskConfig, configSchema(), "Invalid task YAML: config: ");

  const resources = resourcesFromConfig(config.resources ?? null);
  return {
    name,
    numNodes,
    setup: typeof config.setup === "string" ? config.setup : null,
    run: typeof config.run === "string" ? config.run : null,
    envs,
    secrets,
    resources,
    config: taskConfig,
  };
}

export function checkNumNodes(n: unknown): void {
  if (typeof n !== "number" || !Number.isInteger(n) || n <= 0) {
    throw exc.value(`num_nodes should be a positive int. Got: ${pyToStr(n)}`);
  }
}

export function taskFromCommand(run: string | null, env: [string, string][], secret: [string, string][]): Task {
  const envs: Record<string, string> = {};
  for (const [k, v] of env) envs[k] = v;
  const secrets: Record<string, string> = {};
  for (const [k, v] of secret) secrets[k] = v;
  for (const k of [...Object.keys(envs), ...Object.keys(secrets)]) {
    if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(k)) throw exc.value(`Invalid env key: ${k}`);
  }
  return { name: "sky-cmd", numNodes: 1, setup: null, run, envs, secrets, resources: [emptyResources()], config: {} };
}

export function emptyResources(): Resources {
  return {
    cloud: null,
    region: null,
    zone: null,
    accelerator: null,
    acceleratorCount: 1,
    acceleratorArgs: null,
    instanceType: null,
    useSpot: false,
    useSpotSpecified: false,
    diskSize: null,
    ports: [],
    labels: {},
    cpus: null,
    memory: null,
  };
}

function resourcesFromConfig(raw: unknown): Resources[] {
  if (raw === null || raw === undefined) return [emptyResources()];
  validateSchema(raw, resourcesSchema(), "Invalid resources YAML: ");
  const cfg = raw as Dict;
  if (cfg.any_of !== undefined && cfg.ordered !== undefined) {
    throw exc.value('Cannot specify both "any_of" and "ordered" in resources.');
  }
  for (const key of ["any_of", "ordered"]) {
    const list = cfg[key];
    if (list === undefined) continue;
    if (Object.keys(cfg).length > 1) throw exc.value(`Cannot specify "${key}" with other resource fields.`);
    return (list as Dict[]).map((r) => singleResources(r));
  }
  return [singleResources(cfg)];
}

function singleResources(cfg: Dict): Resources {
  const r = emptyResources();
  const infra = cfg.infra as string | undefined;
  if (infra !== undefined && (cfg.cloud !== undefined || cfg.region !== undefined || cfg.zone !== undefined)) {
    throw exc.value(
      "Cannot specify both `infra` and `cloud`, `region`, or `zone` parameters. " +
        `Got: infra=${infra}, cloud=${pyToStr(cfg.cloud ?? null)}, region=${pyToStr(cfg.region ?? null)}, zone=${pyToStr(cfg.zone ?? null)}`,
    );
  }
  let cloud = (cfg.cloud as string | undefined) ?? null;
  let region = (cfg.region as string | undefined) ?? null;
  let zone = (cfg.zone as string | undefined) ?? null;
  if (infra !== undefined) [cloud, region, zone] = parseInfra(infra);
  const accelSpec = cfg.accelerators ?? cfg.gpus;
  const built: ResourcesInput = {
    cloud,
    region,
    zone,
    accelerators: accelSpec === undefined ? null : (accelSpec as string | Record<string, number | null>),
    acceleratorArgs: (cfg.accelerator_args as Dict | undefined) ?? null,
    instanceType: (cfg.instance_type as string | undefined) ?? null,
    useSpot: (cfg.use_spot as boolean | undefined) ?? null,
    diskSize: (cfg.disk_size as number | undefined) ?? null,
    ports: cfg.ports === undefined ? null : normalizePorts(cfg.ports),
    labels: (cfg.labels as Record<string, string> | undefined) ?? {},
    cpus: cfg.cpus === undefined ? null : pyToStr(cfg.cpus),
    memory: cfg.memory === undefined ? null : pyToStr(cfg.memory),
  };
  Object.assign(r, buildResources(built));
  return r;
}

interface ResourcesInput {
  cloud: string | null;
  region: string | null;
  zone: string | null;
  accelerators: string | Record<string, number | null> | null;
  acceleratorArgs: Dict | null;
  instanceType: string | null;
  useSpot: boolean | null;
  diskSize: number | null;
  ports: string[] | null;
  labels: Record<string, string>;
  cpus: string | null;
  memory: string | null;
}

// infra_utils.InfraInfo.from_str → (cloud, region, zone); "*" means any.
export function parseInfra(infra: string): [string | null, string | null, string | null] {
  const parts = infra.split("/");
  const any = (s: string | undefined) => (s === undefined || s === "*" ? null : s);
  const cloud = (parts[0] ?? "").toLowerCase();
  if (cloud === "k8s" || cloud === "kubernetes" || cloud === "ssh") return [cloud, null, null];
  if (parts.length > 3) throw exc.value(`Invalid infra format: ${infra}. Expected format: cloud/region/zone`);
  return [cloud === "*" ? null : cloud, any(parts[1]), any(parts[2])];
}

function normalizePorts(p: unknown): string[] {
  const list = Array.isArray(p) ? p : [p];
  return list.map((x) => String(x));
}

const KNOWN_CLOUDS = [
  "aws",
  "azure",
  "cudo",
  "do",
  "fluidstack",
  "gcp",
  "hyperbolic",
  "ibm",
  "kubernetes",
  "lambda",
  "nebius",
  "oci",
  "paperspace",
  "runpod",
  "scp",
  "seeweb",
  "ssh",
  "vast",
  "vsphere",
  "primeintellect",
  "slurm",
];

// sky.Resources.__init__ checks that can fail without the catalog.
function buildResources(inp: ResourcesInput): Resources {
  const r = emptyResources();
  let cloud = inp.cloud === null ? null : inp.cloud.toLowerCase();
  if (cloud === "k8s") cloud = "kubernetes";
  if (cloud !== null && !KNOWN_CLOUDS.includes(cloud)) {
    throw exc.value(`Cloud ${pyStr(cloud)} is not a valid cloud among ${pyRepr(KNOWN_CLOUDS.map((c) => (c === "gcp" ? "GCP" : c)))}`);
  }
  // Accelerators: "name", "name:count" or {name: count}.
  if (inp.accelerators !== null) {
    let name: string;
    let count = 1;
    if (typeof inp.accelerators === "string") {
      const [n, c] = inp.accelerators.split(":");
      name = (n ?? "").trim();
      if (c !== undefined) {
        count = Number(c);
        if (!Number.isFinite(count)) throw exc.value(`Invalid accelerator count: ${pyStr(c)}`);
      }
    } else {
      const entries = Object.entries(inp.accelerators);
      name = entries[0]?.[0] ?? "";
      count = entries[0]?.[1] ?? 1;
    }
    r.accelerator = name.toLowerCase().startsWith("tpu") ? name.toLowerCase() : name;
    r.acceleratorCount = count;
    if (r.accelerator.startsWith("tpu")) {
      if (cloud === null) cloud = "gcp";
      const args: Dict = { ...(inp.acceleratorArgs ?? {}) };
      const tpuVm = args.tpu_vm === undefined ? true : args.tpu_vm === true;
      if (tpuVm && inp.instanceType !== null && inp.instanceType !== "TPU-VM") {
        throw exc.value(`Cannot specify instance type (got ${pyStr(inp.instanceType)}) for TPU VM.`);
      }
      if (args.runtime_version === undefined) {
        let def = "tpu-vm-base";
        if (!tpuVm) def = "2.12.0";
        else if (r.accelerator.startsWith("tpu-v5")) def = "v2-alpha-tpuv5";
        else if (r.accelerator.startsWith("tpu-v6e")) def = DEFAULT_RUNTIME_V6E;
        args.runtime_version = def;
        outln(`Missing runtime_version in accelerator_args, using default (${def})`);
      }
      r.acceleratorArgs = args;
      if (tpuVm) r.instanceType = "TPU-VM";
    } else {
      r.acceleratorArgs = inp.acceleratorArgs;
    }
  } else if (inp.acceleratorArgs !== null) {
    r.acceleratorArgs = inp.acceleratorArgs;
  }
  if (r.instanceType === null) r.instanceType = inp.instanceType;
  if (r.instanceType === TPU7X_INSTANCE_TYPE && cloud === null) cloud = "gcp";
  r.cloud = cloud;
  // Region/zone must exist for the cloud (catalog.validate_region_zone).
  if (cloud === "gcp") {
    const [region, zone] = validateRegionZone(inp.region, inp.zone);
    r.region = region;
    r.zone = zone;
  } else {
    r.region = inp.region;
    r.zone = inp.zone;
  }
  r.useSpot = inp.useSpot ?? false;
  r.useSpotSpecified = inp.useSpot !== null;
  r.diskSize = inp.diskSize;
  r.ports = inp.ports ?? [];
  for (const p of r.ports) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(p);
    const lo = Number(m?.[1]);
    const hi = m?.[2] === undefined ? lo : Number(m[2]);
    if (!m || lo < 1 || hi > 65535 || lo > hi) throw exc.value(`Invalid port ${pyStr(p)}.`);
  }
  r.labels = inp.labels;
  if (cloud === "gcp") validateGcpLabels(r.labels);
  r.cpus = inp.cpus;
  r.memory = inp.memory;
  return r;
}

function validateRegionZone(region: string | null, zone: string | null): [string | null, string | null] {
  const regions = gcpRegions();
  const candidates = (loc: string, all: string[]) => {
    const c = getCloseMatches(loc, all, 5, 0.9).sort();
    return c.length > 0 ? `\nDid you mean one of these: ${pyStr(c.join(", "))}?` : "";
  };
  if (region !== null && !regions.includes(region)) {
    const c = candidates(region, regions);
    throw exc.value(`Invalid region ${pyStr(region)}${c === "" ? "." : ""}${c}`);
  }
  if (zone !== null) {
    const pool = region !== null ? gcpZones(region) : regions.flatMap(gcpZones);
    if (!pool.includes(zone)) {
      const c = candidates(zone, pool);
      throw exc.value(`Invalid zone ${pyStr(zone)}${region !== null ? ` for region ${pyStr(region)}` : ""}${c === "" ? "." : ""}${c}`);
    }
    return [regionOfZone(zone), zone];
  }
  return [region, zone];
}

// GCP.is_label_valid, reported as Resources._try_validate_labels does.
function validateGcpLabels(labels: Record<string, string>): void {
  const rows: string[][] = [];
  for (const [k, v] of Object.entries(labels)) {
    let err: string | null = null;
    if (!/^[a-z]([a-z0-9_-]{0,62})?$/.test(k)) {
      err = `Invalid tag key ${k} for GCP. Key must start with a lowercase letter and contain only lowercase letters, numbers, hyphens, and underscores. Key must be between 1 and 63 characters long.`;
    } else if (!/^[a-z0-9_-]{0,63}$/.test(String(v))) {
      err = `Invalid tag value ${v} for GCP. Value must contain only lowercase letters, numbers, hyphens, and underscores. Value must be between 0 and 63 characters long.`;
    }
    if (err !== null) rows.push([`${k}: ${v}`, err]);
  }
  if (rows.length > 0) {
    throw exc.value("The following labels are invalid:\n\t" + renderTable(["LABEL", "REASON"], rows).replace(/\n/g, "\n\t"));
  }
}

export interface Overrides {
  cloud?: string | null;
  region?: string | null;
  zone?: string | null;
  accelerators?: string | null;
  instanceType?: string | null;
  useSpot?: boolean;
  diskSize?: number;
  ports?: string[] | null;
  cpus?: string | null;
  memory?: string | null;
}

// Resources.copy(**override_params): the overridden fields, then the same checks again.
export function applyOverrides(task: Task, o: Overrides): void {
  task.resources = task.resources.map((r) => {
    const inp: ResourcesInput = {
      cloud: "cloud" in o ? (o.cloud ?? null) : r.cloud,
      region: "region" in o ? (o.region ?? null) : r.region,
      zone: "zone" in o ? (o.zone ?? null) : r.zone,
      accelerators:
        "accelerators" in o ? (o.accelerators ?? null) : r.accelerator === null ? null : `${r.accelerator}:${r.acceleratorCount}`,
      acceleratorArgs: r.acceleratorArgs,
      instanceType: "instanceType" in o ? (o.instanceType ?? null) : r.instanceType === "TPU-VM" ? null : r.instanceType,
      useSpot: o.useSpot !== undefined ? o.useSpot : r.useSpotSpecified ? r.useSpot : null,
      diskSize: o.diskSize ?? r.diskSize,
      ports: "ports" in o ? (o.ports ?? null) : r.ports,
      labels: r.labels,
      cpus: "cpus" in o ? (o.cpus ?? null) : r.cpus,
      memory: "memory" in o ? (o.memory ?? null) : r.memory,
    };
    return buildResources(inp);
  });
}

// ~/.sky/config.yaml (or $SKYPILOT_CONFIG), task config, then --config, merged like skypilot_config.
export function effectiveConfig(home: string, env: NodeJS.ProcessEnv, task: Task, cliOverrides: Dict): Dict {
  const path = env.SKYPILOT_CONFIG ?? join(home, ".sky", "config.yaml");
  let global: Dict = {};
  if (existsSync(path)) {
    try {
      const docs = loadYamlAll(readFileSync(path, "utf8"));
      if (isDict(docs[0])) global = docs[0];
    } catch (e) {
      throw exc.invalidConfig(`Invalid config YAML (${path}): ${(e as Error).message}`);
    }
  }
  return deepMerge(deepMerge(global, task.config), cliOverrides);
}

export function deepMerge(a: Dict, b: Dict): Dict {
  const outv: Dict = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = outv[k];
    outv[k] = isDict(cur) && isDict(v) ? deepMerge(cur, v) : v;
  }
  return outv;
}

export function getNested(d: Dict, path: string[]): unknown {
  let cur: unknown = d;
  for (const p of path) {
    if (!isDict(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

// flags.config_option: "a.b.c=value" pairs (value parsed as YAML) or a YAML file path.
export function parseCliConfig(values: string[]): Dict {
  let outv: Dict = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    if (eq > 0 && !existsSync(v)) {
      const keys = v.slice(0, eq).split(".");
      let parsed: unknown = v.slice(eq + 1);
      try {
        parsed = loadYamlAll(v.slice(eq + 1))[0] ?? null;
      } catch {
        // keep the raw string
      }
      let node: Dict = {};
      const root = node;
      keys.forEach((k, i) => {
        if (i === keys.length - 1) node[k] = parsed;
        else {
          const next: Dict = {};
          node[k] = next;
          node = next;
        }
      });
      outv = deepMerge(outv, root);
    } else if (existsSync(v)) {
      const doc = loadYamlAll(readFileSync(v, "utf8"))[0];
      if (isDict(doc)) outv = deepMerge(outv, doc);
    } else {
      throw new CliConfigError(`Invalid config override: ${v}. Must be a file path or a key-value pair (key=value).`);
    }
  }
  return outv;
}

export class CliConfigError extends Error {}

// Resources.__repr__, e.g. GCP([Spot], {'tpu-v6e-16': 1}, accelerator_args={...}).
export function resourcesRepr(r: Resources, launchable = false): string {
  const parts: string[] = [];
  let head = "";
  if (launchable || (r.instanceType !== null && r.instanceType !== "TPU-VM")) head += r.instanceType ?? "";
  if (r.useSpot) head += "[Spot]";
  if (head !== "") parts.push(head);
  if (r.cpus !== null) parts.push(`cpus=${r.cpus}`);
  if (r.memory !== null) parts.push(`mem=${r.memory}`);
  if (r.accelerator !== null) {
    parts.push(pyRepr({ [r.accelerator]: r.acceleratorCount }));
    if (r.acceleratorArgs !== null) parts.push(`accelerator_args=${pyRepr(r.acceleratorArgs)}`);
  }
  if (r.diskSize !== null) parts.push(`disk_size=${r.diskSize}`);
  if (r.ports.length > 0) parts.push(`ports=${pyRepr(r.ports)}`);
  const cloud = r.cloud === "gcp" ? "GCP" : r.cloud === null ? "<Cloud>" : r.cloud;
  return `${cloud}(${parts.join(", ")})`;
}
