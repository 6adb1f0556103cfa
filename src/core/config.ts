// The config: one zod schema holds every key's type, per-field rules and default (the only source of config
// types, and of the JSON Schema `tpu-deploy schema` prints). Resolved in three steps:
// 1. each source on its own (the file, the flags) against the schema, so a bad value is named by its source;
// 2. merge leaf by leaf, later sources winning, and parse the merged keys once more for defaults and types;
// 3. derive (topology, tp-size, zones, name) and apply the cross-field rules, collecting every problem at once.
// Pure: no I/O.
// Long because the schema, its sources and the cross-field rules must stay together to report every problem at once.
import { z } from "zod";
import type { ConfigIssue } from "../errors.js";
import { DURATION_PATTERN, MAX_TIMER_MS, timerDuration } from "./duration.js";
import { ignoredFlagWarnings, ownedFlagConflicts } from "./server-args.js";
import {
  ambiguousV7,
  DEFAULT_ZONES,
  type Generation,
  generationOf,
  MAX_REPLICAS,
  normaliseAccelerator,
  planTopology,
  type Topology,
  ZONE_PATTERN,
} from "./topology.js";

// A name must not end in -r<N>: that is how replica N's SkyPilot cluster is named (plan.ts clusterName).
export const NAME_PATTERN = /^(?![a-z0-9-]*-r\d+$)[a-z]([a-z0-9-]{0,38}[a-z0-9])?$/;
export const NAME_RULE =
  "use lowercase letters, digits and -, start with a letter, end with a letter or digit, at most 40 characters, not ending in -r<number> (replica clusters)";
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A path on the hosts: absolute, or relative to the login user's home with ~/; no `..` segment. */
const HOST_PATH = /^(?!(?:.*\/)?\.\.(?:\/|$))(?:\/|~\/)[A-Za-z0-9._+@/-]+$/;
const HTTP_URL = /^https?:\/\/[^\s]+$/;

/** The value zod saw, quoted for a message. */
const quoted = (iss: { input?: unknown }) => `'${String(iss.input)}'`;

function durationProblem(iss: { input?: unknown }): string {
  const d = typeof iss.input === "string" || typeof iss.input === "number" ? timerDuration(iss.input) : undefined;
  return `${quoted(iss)} ${d && !d.ok ? d.problem : "is not a duration (examples: 90s, 20m, 1h30m)"}`;
}

/** Written as 90s, 20m, 1h30m, 2d or a number of seconds; parsed to milliseconds a timer can wait. */
const duration = z
  .union([
    z.string().regex(DURATION_PATTERN, { error: durationProblem }),
    z
      .number()
      .positive({ error: durationProblem })
      .max(MAX_TIMER_MS / 1000, { error: durationProblem }),
  ])
  .transform((value, ctx) => {
    const d = timerDuration(value);
    if (d.ok) return d.ms;
    // "0s" and "30d" match the pattern; only their value is wrong.
    ctx.addIssue({ code: "custom", input: value, message: durationProblem({ input: value }) });
    return z.NEVER;
  });
const DURATION_FORM = "90s, 20m, 1h30m, 2d or a number of seconds; at most 24.8 days";

function port(max: number, why = "") {
  const error = (iss: { input?: unknown }) => `must be a whole number from 1024 to ${max}${why}; got ${String(iss.input)}`;
  return z.number().int({ error }).min(1024, { error }).max(max, { error });
}

/** A whole number ≥ 1, with one message for both ways to miss. */
function positiveInt(error: string | ((iss: { input?: unknown }) => string)) {
  return z.number().int({ error }).positive({ error });
}

const envVarName = z.string().regex(ENV_NAME, { error: (iss) => `${quoted(iss)} is not a valid environment variable name` });

const tpuSchema = z.strictObject({
  generation: z.enum(["v6e", "v7"]).default("v6e").describe("TPU generation: v6e (Trillium) or v7 (TPU7x, Ironwood)"),
  accelerator: z.string().optional().describe("slice type, e.g. v6e-32 or tpu7x-16; derived from generation and nodes when absent"),
  nodes: positiveInt((iss) => `must be a positive whole number of TPU VM hosts (got ${String(iss.input)})`)
    .optional()
    .describe(
      "TPU VM hosts of one slice serving one copy of the model (= sglang-jax --nnodes); with no slice of that many hosts (v6e 2, 3, 5, …) and no replicas, that many replicas of one v6e-4; derived from the accelerator when absent, else 1",
    ),
  topology: z.string().optional().describe("TPU7x only: the slice by its topology, e.g. 2x2x2 (instead of tpu7x-N or nodes)"),
  spot: z.boolean().default(false).describe("use spot (preemptible) capacity; v6e only"),
  zones: z
    .array(z.string().regex(ZONE_PATTERN, { error: (iss) => `${quoted(iss)} is not a GCP zone (like us-east5-b)` }))
    .min(1)
    .refine((zones) => new Set(zones).size === zones.length, { error: "lists a zone twice" })
    .meta({ uniqueItems: true }) // what the refine checks, for the JSON Schema
    .optional()
    .describe("zones to try, in order; default: us-east5-a, us-east5-b, us-central1-b, us-east1-d for v6e, us-central1-c for v7"),
  project: z.string().min(1).optional().describe("GCP project; GOOGLE_CLOUD_PROJECT otherwise"),
  runtimeVersion: z.string().min(1).default("v2-alpha-tpuv6e").describe("TPU VM runtime (v6e)"),
  maxRunHours: z
    .number()
    .positive()
    .default(48)
    .describe("v7 only: the managed instance group's run_duration, in hours (SkyPilot requires it)"),
});

const modelSchema = z.strictObject({
  path: z.string().min(1).default("Qwen/Qwen3-8B").describe("Hugging Face repo id or a path on the hosts (sglang-jax --model-path)"),
});

const serverSchema = z
  .strictObject({
    port: port(65535).default(30000).describe("HTTP port of the server on every host (sglang-jax --port)"),
    distPort: port(65529, " (the rendezvous uses P, P+5 and P+6)")
      .default(10011)
      .describe("rendezvous port P on rank 0; P, P+5 and P+6 must be open between hosts"),
    tpSize: positiveInt("must be a positive whole number")
      .optional()
      .describe("sglang-jax --tp-size; derived (global JAX devices) and checked when given"),
    args: z.array(z.string()).default([]).describe("extra sglang-jax flags, passed through unchanged"),
    env: z
      .record(envVarName, z.string().regex(/^[^\0]*$/, { error: "contains a NUL byte" }))
      .default({})
      .describe("environment for the server on every host (not secret)"),
    secrets: z.array(envVarName).default([]).describe("names of secrets; values come from the environment or secretsFile"),
    secretsFile: z.string().min(1).optional().describe("a 0600 KEY=value file to read secret values from"),
    apiKeySecret: envVarName.optional().describe("name of the secret that becomes sglang-jax's --api-key"),
    public: z.boolean().default(false).describe("open the server port to the internet through SkyPilot's ports"),
    readyTimeout: duration
      .prefault("45m")
      .describe(`how long to wait for the cluster to serve (a cold start can take 30+ min): ${DURATION_FORM}`),
  })
  // Milliseconds under a name that says so: state.json of recorded deployments holds the config with these
  // names (readyTimeoutMs, timeoutMs, backoffMs), and relaunch reads them from there.
  .transform(({ readyTimeout, ...rest }) => ({ ...rest, readyTimeoutMs: readyTimeout }));

const sglangSchema = z.strictObject({
  repo: z.string().min(1).default("https://github.com/sgl-project/sglang-jax.git").describe("git URL of sglang-jax"),
  // The commit the reference notes were read at (sglang-jax.md).
  ref: z.string().min(1).default("cddbf6f1").describe("git ref (commit, tag or branch) to install"),
  python: z.string().min(1).default("3.12").describe("Python version of the venv uv creates"),
  // Absolute (or ~/), because SkyPilot runs setup in ~/sky_workdir while the server starts over SSH in $HOME
  // (skypilot.md: make_task_bash_script).
  dir: z
    .string()
    .regex(HOST_PATH, {
      error: (iss) =>
        `${quoted(iss)} must be an absolute path or start with ~/ (letters, digits, . _ - + @ and /; no ..): setup and the server start run in different directories`,
    })
    .transform((dir) => dir.replace(/\/+$/, ""))
    .prefault("~/sglang-jax")
    .describe(
      "where setup installs sglang-jax on every host (absolute, or ~/ for the login user's home); the server runs <dir>/.venv/bin/python",
    ),
});

const launchSchema = z
  .strictObject({
    timeout: duration.prefault("20m").describe(`how long sky launch may stay pending or provisioning in one zone: ${DURATION_FORM}`),
    template: z.string().min(1).optional().describe("a sky.yaml template to use instead of the built-in one"),
    // Real hosts publish their keys during first boot, long before sky launch finishes; the wait covers a
    // late guest agent. Where keys never appear (guest attributes disabled), every `up` pays it once.
    hostKeyWait: duration
      .prefault("2m")
      .describe(
        `how long to wait for new hosts' SSH host keys to appear in the Cloud TPU API (guest attributes) before trusting the key each host offers on first use: ${DURATION_FORM}`,
      ),
  })
  .transform(({ timeout, hostKeyWait, ...rest }) => ({ timeoutMs: timeout, hostKeyWaitMs: hostKeyWait, ...rest }));

const relaunchSchema = z
  .strictObject({
    maxAttempts: positiveInt("must be a whole number ≥ 1").default(10).describe("failed relaunch attempts before giving up (exit 4)"),
    onDemandAfter: positiveInt("must be a whole number ≥ 1")
      .optional()
      .describe("after this many failed spot attempts, relaunch on demand"),
    webhook: z
      .string()
      .regex(HTTP_URL, { error: "must be an http(s) URL" })
      .optional()
      .describe("http(s) URL that receives a POST for each relaunch event"),
    // No default here: relaunch's --backoff/--backoff-max come first, then these, then the built-in 1m / 30m.
    backoff: duration
      .optional()
      .describe(`wait after the first failed relaunch attempt; doubles per failure (default 1m): ${DURATION_FORM}`),
    backoffMax: duration.optional().describe(`longest wait between failed relaunch attempts (default 30m): ${DURATION_FORM}`),
  })
  .transform(({ backoff, backoffMax, ...rest }) => ({ ...rest, backoffMs: backoff, backoffMaxMs: backoffMax }));

/** `tpu-deploy.yaml`; the flags use the same shape. Every key may be left out. */
export const configSchema = z
  .strictObject({
    name: z
      .string()
      .regex(NAME_PATTERN, {
        error: (iss) => `${quoted(iss)} is not a valid name: ${NAME_RULE} (it becomes the SkyPilot cluster name and a GCP label)`,
      })
      .optional()
      .describe("deployment name: lowercase letters, digits and -, starting with a letter, ≤ 40; default sgl-<generation>-<hosts>"),
    replicas: positiveInt("must be a positive whole number")
      .max(MAX_REPLICAS)
      .optional()
      .describe("independent copies of the slice, each its own SkyPilot cluster serving the whole model (default 1; see tpu.nodes)"),
    tpu: tpuSchema.prefault({}).describe("the TPU slice(s) and where to get them"),
    model: modelSchema.prefault({}).describe("the model to serve"),
    server: serverSchema.prefault({}).describe("the sglang-jax server on every host"),
    sglang: sglangSchema.prefault({}).describe("the sglang-jax build that setup installs"),
    launch: launchSchema.prefault({}).describe("sky launch"),
    relaunch: relaunchSchema.prefault({}).describe("tpu-deploy relaunch and watch: bringing a deployment back"),
  })
  .describe("tpu-deploy.yaml: a deployment of sglang-jax on Cloud TPU; flags override its keys one by one");

/** The keys as written, for the JSON Schema: transformed fields (durations) show what a user writes. */
export function configJsonSchema(): unknown {
  return z.toJSONSchema(configSchema, { target: "draft-2020-12", io: "input" });
}

type Parsed = z.output<typeof configSchema>;

/** The resolved, validated config every command works from: the schema's output, completed by what is derived. */
export type Config = Omit<Parsed, "name" | "replicas" | "tpu" | "server"> & {
  name: string;
  /** Copies of the slice, each its own SkyPilot cluster (topology.replicas). */
  replicas: number;
  tpu: Omit<Parsed["tpu"], "accelerator" | "nodes" | "zones" | "project"> & {
    /** Canonical: `v6e-32`, `tpu7x-16`. */
    accelerator: string;
    nodes: number;
    zones: string[];
    /** tpu.project, else GOOGLE_CLOUD_PROJECT. */
    project: string | undefined;
  };
  topology: Topology;
  server: Omit<Parsed["server"], "tpSize"> & { tpSize: number };
  warnings: string[];
};

export interface ConfigSource {
  /** Shown in messages: `tpu-deploy.yaml`, `flags`. */
  label: string;
  /** How a key from this source is named in messages: `tpu.accelerator` or `--accelerator`. */
  keyName(path: string): string;
  data: unknown;
}

export type ResolveResult = { ok: true; config: Config } | { ok: false; issues: ConfigIssue[]; conflict: boolean };

type Origin = { source: ConfigSource; value: unknown };

/** Where an issue is: one path per unknown key, at the key's own path (`tpu.foo`), so a top-level one has a path too. */
function issuePaths(issue: z.core.$ZodIssue): PropertyKey[][] {
  return issue.code === "unrecognized_keys" ? issue.keys.map((k) => [...issue.path, k]) : [issue.path];
}

/** Zod's issues as `path: message (source)`, the path named as the source names it (`--port` for a flag). */
function sourceIssues(error: z.ZodError, sourceAt: (path: string) => ConfigSource | undefined): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of error.issues) {
    const message =
      issue.code === "unrecognized_keys"
        ? "unknown key"
        : issue.code === "invalid_key"
          ? (issue.issues[0]?.message ?? issue.message)
          : issue.message;
    for (const segments of issuePaths(issue)) {
      const path = segments.map(String).join(".");
      const source = sourceAt(path);
      const named = source && path ? source.keyName(path) : path;
      const text = source ? `${message} (${source.label})` : message;
      // A value can break several checks with one message (a port of 70000.5: whole and ≤ 65535).
      if (!out.some((i) => i.path === named && i.message === text)) out.push({ path: named, message: text });
    }
  }
  return out;
}

function isSection(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Where merge works: `name`, `tpu`, `tpu.zones` (never deeper: a list or a map is one leaf). "" is the whole source. */
function leafPaths(issue: z.core.$ZodIssue): string[] {
  return issuePaths(issue).map((p) => p.slice(0, 2).map(String).join("."));
}

/** Merge leaf by leaf, leaving out the ones step 1 refused: later sources win. Records where each leaf came from. */
function merge(sources: { source: ConfigSource; refused: Set<string> }[]): {
  merged: Record<string, unknown>;
  origins: Map<string, Origin[]>;
} {
  const merged: Record<string, unknown> = {};
  const origins = new Map<string, Origin[]>();
  const record = (path: string, source: ConfigSource, value: unknown) =>
    origins.set(path, [...(origins.get(path) ?? []), { source, value }]);
  for (const { source, refused } of sources) {
    if (!isSection(source.data) || refused.has("")) continue;
    for (const [section, value] of Object.entries(source.data)) {
      if (value === undefined || refused.has(section)) continue;
      if (!isSection(value)) {
        merged[section] = value;
        record(section, source, value);
        continue;
      }
      const current = merged[section];
      const target = isSection(current) ? current : {};
      merged[section] = target;
      for (const [key, leaf] of Object.entries(value)) {
        if (leaf === undefined || refused.has(`${section}.${key}`)) continue;
        target[key] = leaf;
        record(`${section}.${key}`, source, leaf);
      }
    }
  }
  return { merged, origins };
}

function describe(origins: Map<string, Origin[]>, path: string): string {
  const last = origins.get(path)?.at(-1);
  return last ? `${last.source.keyName(path)} (${last.source.label})` : path;
}

export function resolveConfig(sources: ConfigSource[], env: NodeJS.ProcessEnv = {}): ResolveResult {
  // Step 1: every source against the schema, so each bad value is reported with where it came from,
  // even when a later source overrides it. Refused leaves are left out of the merge, and the rules below
  // that read one are skipped: with its default in its place they would report what the user did not write.
  const issues: ConfigIssue[] = [];
  const refusedAnywhere = new Set<string>();
  const checked = sources.map((source) => {
    const parsed = configSchema.safeParse(source.data ?? {});
    if (parsed.success) return { source, refused: new Set<string>() };
    issues.push(...sourceIssues(parsed.error, () => source));
    const refused = new Set(parsed.error.issues.flatMap(leafPaths));
    for (const p of refused) refusedAnywhere.add(p);
    return { source, refused };
  });
  const usable = (...paths: string[]) =>
    !refusedAnywhere.has("") && paths.every((p) => !refusedAnywhere.has(p) && !refusedAnywhere.has(p.split(".")[0] ?? p));

  // Step 2: merge, then defaults and types from one more parse. Every leaf passed step 1 on its own; should
  // the merge still break a rule, the issue is named by the source that set the key.
  const { merged, origins } = merge(checked);
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) {
    const sourceAt = (path: string) => {
      const [section, key] = path.split(".");
      return (origins.get(`${section}.${key}`) ?? origins.get(section ?? ""))?.at(-1)?.source;
    };
    return { ok: false, issues: [...issues, ...sourceIssues(parsed.error, sourceAt)], conflict: false };
  }
  const f = parsed.data;
  const given = (path: string) => origins.has(path);
  let conflict = false;

  // Step 3: derive, and the rules that span fields; collect everything.
  const accelerator = f.tpu.accelerator === undefined ? undefined : normaliseAccelerator(f.tpu.accelerator);
  const ambiguous = f.tpu.accelerator === undefined ? undefined : ambiguousV7(f.tpu.accelerator);
  // Only TPU7x slices are named by a topology, so --topology alone means v7 (a v6e generation given with it is refused in topology.ts).
  const accGeneration =
    ambiguous || (accelerator === undefined && f.tpu.topology !== undefined)
      ? "v7"
      : accelerator === undefined
        ? undefined
        : generationOf(accelerator);
  // An accelerator (or a topology) given without a generation names its own; v6e is the default only when neither is given.
  const generation: Generation = given("tpu.generation") ? f.tpu.generation : (accGeneration ?? f.tpu.generation);
  if (ambiguous) {
    issues.push({ path: "tpu.accelerator", message: ambiguous });
  } else if (accelerator !== undefined && accGeneration === undefined) {
    issues.push({
      path: "tpu.accelerator",
      message: `'${f.tpu.accelerator}' is not a v6e or TPU7x slice type (examples: v6e-8, v6e-32, tpu7x-16)`,
    });
  } else if (given("tpu.generation") && accGeneration !== undefined && accGeneration !== f.tpu.generation) {
    conflict = true;
    issues.push({
      path: "tpu.generation",
      message: `${describe(origins, "tpu.generation")} is ${f.tpu.generation} but ${describe(origins, "tpu.accelerator")} is ${accelerator}, a ${accGeneration} slice; drop one or make them agree`,
    });
  }

  const skipTopology =
    ambiguous !== undefined ||
    (accGeneration === undefined && accelerator !== undefined) ||
    conflict ||
    !usable("tpu.generation", "tpu.accelerator", "tpu.nodes", "tpu.topology", "replicas");
  const topo = skipTopology
    ? undefined
    : planTopology({ generation, accelerator, nodes: f.tpu.nodes, replicas: f.replicas, topology: f.tpu.topology });
  if (topo && !topo.ok) {
    for (const i of topo.issues) issues.push({ path: i.path, message: i.message });
  }

  if (generation === "v7" && f.tpu.spot && usable("tpu.generation", "tpu.accelerator", "tpu.spot")) {
    conflict = conflict || given("tpu.spot");
    issues.push({
      path: "tpu.spot",
      message:
        "TPU7x is provisioned through a managed instance group with DWS, which does not support spot capacity (SkyPilot: 'Managed Instance Group with DWS does not support spot instances'); drop --spot or use --tpu v6e",
    });
  }

  const { port, distPort } = f.server;
  if (port >= distPort && port <= distPort + 6 && usable("server.port", "server.distPort")) {
    issues.push({ path: "server.port", message: `${port} collides with the rendezvous ports ${distPort}..${distPort + 6}` });
  }

  const tpSize = topo?.ok ? topo.topology.tpSize : 0;
  if (f.server.tpSize !== undefined && topo?.ok && f.server.tpSize !== tpSize && usable("server.tpSize")) {
    issues.push({
      path: "server.tpSize",
      message: `must be ${tpSize}: the JAX device count of one ${topo.topology.slice.accelerator} slice (${topo.topology.hosts} host(s); sglang-jax's mesh spans every device of the slice)${topo.topology.replicas > 1 ? `, the same in each of the ${topo.topology.replicas} replicas` : ""}; drop --tp-size to have it derived`,
    });
  }

  for (const c of ownedFlagConflicts(f.server.args)) issues.push({ path: "server.args", message: c });

  // The API key is a secret too: its value must reach the hosts the same way.
  const secrets = [...new Set([...f.server.secrets, ...(f.server.apiKeySecret ? [f.server.apiKeySecret] : [])])];
  for (const s of secrets) {
    if (s in f.server.env)
      issues.push({ path: `server.env.${s}`, message: `'${s}' is also a secret; keep secret values out of server.env` });
  }

  const { backoffMs, backoffMaxMs } = f.relaunch;
  if (backoffMs !== undefined && backoffMaxMs !== undefined && backoffMaxMs < backoffMs) {
    issues.push({ path: "relaunch.backoffMax", message: "is shorter than relaunch.backoff" });
  }

  if (issues.length > 0 || !topo?.ok) return { ok: false, issues, conflict };
  const topology = topo.topology;
  // Built key by key in a fixed order: state.json keeps the config, and up compares its JSON (state.ts).
  return {
    ok: true,
    config: {
      name: f.name ?? defaultName(generation, f.tpu.nodes ?? topology.hosts, f.replicas),
      replicas: topology.replicas,
      tpu: {
        generation,
        accelerator: topology.slice.accelerator,
        nodes: topology.hosts,
        spot: f.tpu.spot,
        zones: f.tpu.zones ?? [...DEFAULT_ZONES[generation]],
        project: f.tpu.project ?? env.GOOGLE_CLOUD_PROJECT,
        runtimeVersion: f.tpu.runtimeVersion,
        maxRunHours: f.tpu.maxRunHours,
      },
      topology,
      model: f.model,
      server: {
        port,
        distPort,
        tpSize,
        args: f.server.args,
        env: f.server.env,
        secrets,
        secretsFile: f.server.secretsFile,
        apiKeySecret: f.server.apiKeySecret,
        public: f.server.public,
        readyTimeoutMs: f.server.readyTimeoutMs,
      },
      sglang: f.sglang,
      launch: f.launch,
      relaunch: f.relaunch,
      warnings: [...topology.warnings, ...ignoredFlagWarnings(f.server.args)],
    },
  };
}

/** `sgl-<generation>-<nodes as asked>`, with `x<R>` when replicas were asked for: `up --nodes 2` is sgl-v6e-2. */
export function defaultName(generation: Generation, nodes: number, replicas?: number): string {
  return `sgl-${generation}-${nodes}${replicas !== undefined && replicas > 1 ? `x${replicas}` : ""}`;
}

/**
 * The config back in the form a user writes it, every value explicit (durations in seconds): what a
 * deployment's state records, so that it resolves to the same config wherever and whenever it is read
 * (a cron run without GOOGLE_CLOUD_PROJECT, a later tpu-deploy with other defaults).
 */
export function specOf(c: Config): Record<string, unknown> {
  const seconds = (ms: number | undefined) => (ms === undefined ? undefined : ms / 1000);
  const prune = (x: Record<string, unknown>) => Object.fromEntries(Object.entries(x).filter(([, v]) => v !== undefined));
  return {
    name: c.name,
    replicas: c.replicas,
    tpu: prune({
      generation: c.tpu.generation,
      accelerator: c.tpu.accelerator,
      nodes: c.topology.hosts,
      spot: c.tpu.spot,
      zones: c.tpu.zones,
      project: c.tpu.project,
      runtimeVersion: c.tpu.runtimeVersion,
      maxRunHours: c.tpu.maxRunHours,
    }),
    model: { ...c.model },
    server: prune({
      port: c.server.port,
      distPort: c.server.distPort,
      args: c.server.args,
      env: c.server.env,
      secrets: c.server.secrets.filter((s) => s !== c.server.apiKeySecret),
      secretsFile: c.server.secretsFile,
      apiKeySecret: c.server.apiKeySecret,
      public: c.server.public,
      readyTimeout: seconds(c.server.readyTimeoutMs),
    }),
    sglang: { ...c.sglang },
    launch: prune({ timeout: seconds(c.launch.timeoutMs), hostKeyWait: seconds(c.launch.hostKeyWaitMs), template: c.launch.template }),
    relaunch: prune({
      maxAttempts: c.relaunch.maxAttempts,
      onDemandAfter: c.relaunch.onDemandAfter,
      webhook: c.relaunch.webhook,
      backoff: seconds(c.relaunch.backoffMs),
      backoffMax: seconds(c.relaunch.backoffMaxMs),
    }),
  };
}

/** A recorded spec → its config; the issues when it no longer resolves (a rule tightened since). */
export function resolveSpec(spec: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): ResolveResult {
  return resolveConfig([{ label: "state.json", keyName: (p) => p, data: spec }], env);
}
