// The config: one zod schema (the only source of config types), validated in three steps:
// 1. shape (each source on its own: the file, the flags), 2. merge + normalise (defaults, derived values),
// 3. cross-field rules that collect every problem at once. Pure: no I/O.
import { z } from "zod";
import type { ConfigIssue } from "../errors.js";
import { timerDuration } from "./duration.js";
import {
  DEFAULT_ZONES,
  type Generation,
  generationOf,
  normaliseAccelerator,
  planTopology,
  type Topology,
  ZONE_PATTERN,
} from "./topology.js";
import { ownedFlagConflicts } from "./server-args.js";

export const NAME_PATTERN = /^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A path on the hosts: absolute, or relative to the login user's home with ~/. */
const HOST_PATH = /^(\/|~\/)[A-Za-z0-9._+@/-]+$/;
const duration = z.union([z.string(), z.number()]).describe("a duration: 90s, 20m, 1h30m, or a number of seconds");

export const DEFAULTS = {
  generation: "v6e" as Generation,
  model: "Qwen/Qwen3-8B",
  spot: false,
  port: 30000,
  distPort: 10011,
  readyTimeout: "45m",
  launchTimeout: "20m",
  maxRunHours: 48,
  runtimeVersion: "v2-alpha-tpuv6e",
  sglangRepo: "https://github.com/sgl-project/sglang-jax.git",
  // The commit the reference notes were read at (sglang-jax.md); change with sglang.ref.
  sglangRef: "cddbf6f1",
  python: "3.12",
  // Where setup installs sglang-jax on every host; absolute (or ~/), because SkyPilot runs setup in
  // ~/sky_workdir while the server starts over SSH in $HOME (skypilot.md: make_task_bash_script).
  sglangDir: "~/sglang-jax",
  maxAttempts: 10,
} as const;

const tpuSchema = z
  .strictObject({
    generation: z.enum(["v6e", "v7"]).describe("TPU generation: v6e (Trillium) or v7 (TPU7x, Ironwood)"),
    accelerator: z.string().describe("slice type, e.g. v6e-32 or tpu7x-16; derived from generation and nodes when absent"),
    nodes: z.number().describe("TPU VM hosts serving the model together (= sglang-jax --nnodes)"),
    spot: z.boolean().describe("use spot (preemptible) capacity; v6e only"),
    zones: z.array(z.string()).min(1).describe("zones to try, in order"),
    project: z.string().min(1).describe("GCP project; GOOGLE_CLOUD_PROJECT otherwise"),
    runtimeVersion: z.string().min(1).describe("TPU VM runtime (v6e); default v2-alpha-tpuv6e"),
    maxRunHours: z.number().positive().describe("v7 only: the managed instance group's run_duration, in hours (SkyPilot requires it)"),
  })
  .partial();

const modelSchema = z
  .strictObject({
    path: z.string().min(1).describe("Hugging Face repo id or a path on the hosts (sglang-jax --model-path)"),
  })
  .partial();

const serverSchema = z
  .strictObject({
    port: z.number().describe("HTTP port of the server on every host (sglang-jax --port)"),
    distPort: z.number().describe("rendezvous port P on rank 0; P, P+5 and P+6 must be open between hosts"),
    tpSize: z.number().describe("sglang-jax --tp-size; derived (global JAX devices) and checked when given"),
    args: z.array(z.string()).describe("extra sglang-jax flags, passed through unchanged"),
    env: z.record(z.string(), z.string()).describe("environment for the server on every host (not secret)"),
    secrets: z.array(z.string()).describe("names of secrets; values come from the environment or secretsFile"),
    secretsFile: z.string().min(1).describe("a 0600 KEY=value file to read secret values from"),
    apiKeySecret: z.string().describe("name of the secret that becomes sglang-jax's --api-key"),
    public: z.boolean().describe("open the server port to the internet through SkyPilot's ports"),
    readyTimeout: duration.describe("how long to wait for the cluster to serve (a cold start can take 30+ min)"),
  })
  .partial();

const sglangSchema = z
  .strictObject({
    repo: z.string().min(1).describe("git URL of sglang-jax"),
    ref: z.string().min(1).describe("git ref (commit, tag or branch) to install"),
    python: z.string().min(1).describe("Python version of the venv uv creates"),
    dir: z
      .string()
      .min(1)
      .describe(
        "where setup installs sglang-jax on every host (absolute, or ~/ for the login user's home); the server runs <dir>/.venv/bin/python",
      ),
  })
  .partial();

const launchSchema = z
  .strictObject({
    timeout: duration.describe("how long sky launch may stay pending or provisioning in one zone"),
    template: z.string().min(1).describe("a sky.yaml template to use instead of the built-in one"),
  })
  .partial();

const relaunchSchema = z
  .strictObject({
    maxAttempts: z.number().describe("failed relaunch attempts before giving up (exit 4)"),
    onDemandAfter: z.number().describe("after this many failed spot attempts, relaunch on demand"),
    webhook: z.string().describe("URL that receives a POST for each relaunch event"),
    backoff: duration.describe("wait after the first failed relaunch attempt; doubles per failure (default 1m)"),
    backoffMax: duration.describe("longest wait between failed relaunch attempts (default 30m)"),
  })
  .partial();

/** The shape of `tpu-deploy.yaml`; flags use the same shape. Every key optional. */
export const fileConfigSchema = z
  .strictObject({
    name: z.string().describe("deployment name: lowercase letters, digits and -, starting with a letter, ≤ 40"),
    tpu: tpuSchema,
    model: modelSchema,
    server: serverSchema,
    sglang: sglangSchema,
    launch: launchSchema,
    relaunch: relaunchSchema,
  })
  .partial();

export type FileConfig = z.infer<typeof fileConfigSchema>;

export function configJsonSchema(): unknown {
  return z.toJSONSchema(fileConfigSchema, { target: "draft-2020-12" });
}

/** The resolved, validated config every command works from. */
export interface Config {
  name: string;
  tpu: {
    generation: Generation;
    accelerator: string;
    nodes: number;
    spot: boolean;
    zones: string[];
    project: string | undefined;
    runtimeVersion: string;
    maxRunHours: number;
  };
  topology: Topology;
  model: { path: string };
  server: {
    port: number;
    distPort: number;
    tpSize: number;
    args: string[];
    env: Record<string, string>;
    secrets: string[];
    secretsFile: string | undefined;
    apiKeySecret: string | undefined;
    public: boolean;
    readyTimeoutMs: number;
  };
  sglang: { repo: string; ref: string; python: string; dir: string };
  launch: { timeoutMs: number; template: string | undefined };
  relaunch: {
    maxAttempts: number;
    onDemandAfter: number | undefined;
    webhook: string | undefined;
    /** Undefined: the built-in default (1m, capped at 30m), or the command's flags. */
    backoffMs?: number | undefined;
    backoffMaxMs?: number | undefined;
  };
  warnings: string[];
}

export interface ConfigSource {
  /** Shown in messages: `tpu-deploy.yaml`, `flags`. */
  label: string;
  /** How a key from this source is named in messages: `tpu.accelerator` or `--accelerator`. */
  keyName(path: string): string;
  data: unknown;
}

export type ResolveResult = { ok: true; config: Config } | { ok: false; issues: ConfigIssue[]; conflict: boolean };

type Origin = { source: ConfigSource; value: unknown };

/** Step 1: the shape of one source. */
function checkShape(source: ConfigSource, issues: ConfigIssue[]): FileConfig | undefined {
  const parsed = fileConfigSchema.safeParse(source.data ?? {});
  if (parsed.success) return parsed.data;
  for (const issue of parsed.error.issues) {
    // One issue per unknown key, at the key's own path (`tpu.foo`), so a top-level one has a path too.
    const paths = issue.code === "unrecognized_keys" ? issue.keys.map((k) => [...issue.path, k].join(".")) : [issue.path.join(".")];
    const message = issue.code === "unrecognized_keys" ? "unknown key" : issue.message;
    for (const path of paths) {
      issues.push({ path: source.label === "flags" && path ? source.keyName(path) : path, message: `${message} (${source.label})` });
    }
  }
  return undefined;
}

/** Merge leaf by leaf: later sources win. Records where each leaf came from for conflict messages. */
function merge(sources: { source: ConfigSource; data: FileConfig }[]): { merged: FileConfig; origins: Map<string, Origin[]> } {
  const merged: Record<string, Record<string, unknown> | string> = {};
  const origins = new Map<string, Origin[]>();
  for (const { source, data } of sources) {
    for (const [section, value] of Object.entries(data)) {
      if (value === undefined) continue;
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        merged[section] = value as string;
        origins.set(section, [...(origins.get(section) ?? []), { source, value }]);
        continue;
      }
      const target = (merged[section] ??= {}) as Record<string, unknown>;
      for (const [key, leaf] of Object.entries(value)) {
        if (leaf === undefined) continue;
        target[key] = leaf;
        const path = `${section}.${key}`;
        origins.set(path, [...(origins.get(path) ?? []), { source, value: leaf }]);
      }
    }
  }
  return { merged: merged as FileConfig, origins };
}

function describe(origins: Map<string, Origin[]>, path: string): string {
  const last = origins.get(path)?.at(-1);
  return last ? `${last.source.keyName(path)} (${last.source.label})` : path;
}

export function resolveConfig(sources: ConfigSource[], env: NodeJS.ProcessEnv = {}): ResolveResult {
  const issues: ConfigIssue[] = [];
  const shaped = sources.map((source) => ({ source, data: checkShape(source, issues) }));
  if (issues.length > 0) return { ok: false, issues, conflict: false };
  const { merged: f, origins } = merge(shaped.map((s) => ({ source: s.source, data: s.data ?? {} })));
  let conflict = false;

  // Step 2: normalise and derive.
  const accelerator = f.tpu?.accelerator === undefined ? undefined : normaliseAccelerator(f.tpu.accelerator);
  const accGeneration = accelerator === undefined ? undefined : generationOf(accelerator);
  const generation: Generation = f.tpu?.generation ?? accGeneration ?? DEFAULTS.generation;
  if (accelerator !== undefined && accGeneration === undefined) {
    issues.push({
      path: "tpu.accelerator",
      message: `'${f.tpu?.accelerator}' is not a v6e or TPU7x slice type (examples: v6e-8, v6e-32, tpu7x-16)`,
    });
  } else if (f.tpu?.generation !== undefined && accGeneration !== undefined && accGeneration !== f.tpu.generation) {
    conflict = true;
    issues.push({
      path: "tpu.generation",
      message: `${describe(origins, "tpu.generation")} is ${f.tpu.generation} but ${describe(origins, "tpu.accelerator")} is ${accelerator}, a ${accGeneration} slice; drop one or make them agree`,
    });
  }

  const nodes = f.tpu?.nodes;
  const skipTopology = (accGeneration === undefined && accelerator !== undefined) || conflict;
  const topo = skipTopology ? undefined : planTopology({ generation, accelerator, nodes });
  if (topo && !topo.ok) {
    for (const i of topo.issues) issues.push({ path: i.path, message: i.message });
  }

  // Step 3: cross-field rules; collect everything.
  const name = f.name ?? defaultName(generation, topo?.ok ? topo.topology.hosts : (nodes ?? 1));
  if (!NAME_PATTERN.test(name)) {
    issues.push({
      path: "name",
      message: `'${name}' is not a valid name: use lowercase letters, digits and -, start with a letter, end with a letter or digit, at most 40 characters (it becomes the SkyPilot cluster name and a GCP label)`,
    });
  }
  const spot = f.tpu?.spot ?? DEFAULTS.spot;
  if (generation === "v7" && spot) {
    conflict = conflict || (origins.get("tpu.spot")?.length ?? 0) > 0;
    issues.push({
      path: "tpu.spot",
      message:
        "TPU7x is provisioned through a managed instance group with DWS, which does not support spot capacity (SkyPilot: 'Managed Instance Group with DWS does not support spot instances'); drop --spot or use --tpu v6e",
    });
  }
  const zones = f.tpu?.zones ?? DEFAULT_ZONES[generation];
  zones.forEach((zone, i) => {
    if (!ZONE_PATTERN.test(zone)) {
      issues.push({ path: `tpu.zones.${i}`, message: `'${zone}' is not a GCP zone (like us-east5-b)` });
    }
  });
  if (new Set(zones).size !== zones.length) issues.push({ path: "tpu.zones", message: "lists a zone twice" });

  const port = f.server?.port ?? DEFAULTS.port;
  const distPort = f.server?.distPort ?? DEFAULTS.distPort;
  checkPort(issues, "server.port", port, 65535);
  checkPort(issues, "server.distPort", distPort, 65529, "the rendezvous uses P, P+5 and P+6");
  if (port >= distPort && port <= distPort + 6) {
    issues.push({ path: "server.port", message: `${port} collides with the rendezvous ports ${distPort}..${distPort + 6}` });
  }

  const tpSize = topo?.ok ? topo.topology.tpSize : 0;
  if (f.server?.tpSize !== undefined && topo?.ok && f.server.tpSize !== tpSize) {
    issues.push({
      path: "server.tpSize",
      message: `must be ${tpSize}: the global JAX device count of ${topo.topology.hosts} host(s) of ${topo.topology.slice.accelerator} (sglang-jax's mesh spans every device); drop --tp-size to have it derived`,
    });
  }

  const args = f.server?.args ?? [];
  for (const c of ownedFlagConflicts(args)) issues.push({ path: "server.args", message: c });

  const env2 = f.server?.env ?? {};
  for (const [k, v] of Object.entries(env2)) {
    if (!ENV_NAME.test(k)) issues.push({ path: `server.env.${k}`, message: "is not a valid environment variable name" });
    if (v.includes("\0")) issues.push({ path: `server.env.${k}`, message: "contains a NUL byte" });
  }
  const secrets = [...new Set([...(f.server?.secrets ?? []), ...(f.server?.apiKeySecret ? [f.server.apiKeySecret] : [])])];
  for (const s of secrets) {
    if (!ENV_NAME.test(s)) issues.push({ path: "server.secrets", message: `'${s}' is not a valid environment variable name` });
    if (s in env2) issues.push({ path: `server.env.${s}`, message: `'${s}' is also a secret; keep secret values out of server.env` });
  }

  const sglangDir = f.sglang?.dir ?? DEFAULTS.sglangDir;
  if (!HOST_PATH.test(sglangDir) || sglangDir.split("/").includes("..")) {
    issues.push({
      path: "sglang.dir",
      message: `'${sglangDir}' must be an absolute path or start with ~/ (letters, digits, . _ - + @ and /; no ..): setup and the server start run in different directories`,
    });
  }

  const readyTimeoutMs = checkDuration(issues, "server.readyTimeout", f.server?.readyTimeout ?? DEFAULTS.readyTimeout);
  const launchTimeoutMs = checkDuration(issues, "launch.timeout", f.launch?.timeout ?? DEFAULTS.launchTimeout);
  const maxAttempts = f.relaunch?.maxAttempts ?? DEFAULTS.maxAttempts;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1)
    issues.push({ path: "relaunch.maxAttempts", message: "must be a whole number ≥ 1" });
  const onDemandAfter = f.relaunch?.onDemandAfter;
  if (onDemandAfter !== undefined && (!Number.isInteger(onDemandAfter) || onDemandAfter < 1)) {
    issues.push({ path: "relaunch.onDemandAfter", message: "must be a whole number ≥ 1" });
  }
  const webhook = f.relaunch?.webhook;
  const backoffMs = f.relaunch?.backoff === undefined ? undefined : checkDuration(issues, "relaunch.backoff", f.relaunch.backoff);
  const backoffMaxMs =
    f.relaunch?.backoffMax === undefined ? undefined : checkDuration(issues, "relaunch.backoffMax", f.relaunch.backoffMax);
  if (backoffMs && backoffMaxMs && backoffMaxMs < backoffMs) {
    issues.push({ path: "relaunch.backoffMax", message: "is shorter than relaunch.backoff" });
  }
  if (webhook !== undefined && !/^https?:\/\/[^\s]+$/.test(webhook)) {
    issues.push({ path: "relaunch.webhook", message: "must be an http(s) URL" });
  }

  if (issues.length > 0 || !topo?.ok) return { ok: false, issues, conflict };
  const topology = topo.topology;
  const warnings = [...topology.warnings];
  return {
    ok: true,
    config: {
      name,
      tpu: {
        generation,
        accelerator: topology.slice.accelerator,
        nodes: topology.hosts,
        spot,
        zones,
        project: f.tpu?.project ?? env.GOOGLE_CLOUD_PROJECT,
        runtimeVersion: f.tpu?.runtimeVersion ?? DEFAULTS.runtimeVersion,
        maxRunHours: f.tpu?.maxRunHours ?? DEFAULTS.maxRunHours,
      },
      topology,
      model: { path: f.model?.path ?? DEFAULTS.model },
      server: {
        port,
        distPort,
        tpSize,
        args,
        env: env2,
        secrets,
        secretsFile: f.server?.secretsFile,
        apiKeySecret: f.server?.apiKeySecret,
        public: f.server?.public ?? false,
        readyTimeoutMs,
      },
      sglang: {
        repo: f.sglang?.repo ?? DEFAULTS.sglangRepo,
        ref: f.sglang?.ref ?? DEFAULTS.sglangRef,
        python: f.sglang?.python ?? DEFAULTS.python,
        dir: sglangDir.replace(/\/+$/, ""),
      },
      launch: { timeoutMs: launchTimeoutMs, template: f.launch?.template },
      relaunch: { maxAttempts, onDemandAfter, webhook, backoffMs, backoffMaxMs },
      warnings,
    },
  };
}

export function defaultName(generation: Generation, hosts: number): string {
  return `sgl-${generation}-${hosts}`;
}

function checkPort(issues: ConfigIssue[], path: string, port: number, max: number, why?: string): void {
  if (!Number.isInteger(port) || port < 1024 || port > max) {
    issues.push({ path, message: `must be a whole number from 1024 to ${max}${why ? ` (${why})` : ""}; got ${port}` });
  }
}

function checkDuration(issues: ConfigIssue[], path: string, value: string | number): number {
  const d = timerDuration(value);
  if (!d.ok) {
    issues.push({ path, message: `'${value}' ${d.problem}` });
    return 0;
  }
  return d.ms;
}
