import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { flagName, flagsToConfig, type SpecFlags } from "../../src/cli/config-flags.js";
import { type Config, type ConfigSource, configJsonSchema, configSchema, resolveConfig } from "../../src/core/config.js";
import { formatDuration, MAX_TIMER_MS, parseDuration, timerDuration } from "../../src/core/duration.js";
import { ownedFlagConflicts } from "../../src/core/server-args.js";
import { resourcesKey, serverKey } from "../../src/core/state.js";
import { DEFAULT_ZONES, V6E_CATALOG_ZONES } from "../../src/core/topology.js";
import type { ConfigIssue } from "../../src/errors.js";

// The example of issue 2, verbatim.
const ISSUE_EXAMPLE = `
name: llama-serve
tpu:
  generation: v6e          # v6e | v7
  accelerator: v6e-32      # optional; otherwise derived from generation + nodes
  nodes: 8                 # TPU VM hosts serving the model (= sglang-jax --nnodes)
  spot: true
  zones: [us-east5-a, us-central1-b]   # tried in this order
  project: my-gcp-project  # optional; GOOGLE_CLOUD_PROJECT otherwise
model:
  path: meta-llama/Llama-3.1-70B-Instruct
server:
  port: 30000
  distPort: 10011
  args: ["--page-size=64", "--attention-backend=fa", "--mem-fraction-static=0.8"]
  env: {JAX_COMPILATION_CACHE_DIR: /mnt/cache/jit}
  secrets: [HF_TOKEN]                 # names only; values never stored
  secretsFile: ~/.config/tpu-deploy/secrets.env   # optional 0600 KEY=value file
  apiKeySecret: SGLANG_API_KEY        # optional: becomes sglang-jax's --api-key
relaunch:
  maxAttempts: 10
`;

const file = (data: unknown, label = "tpu-deploy.yaml"): ConfigSource => ({ label, keyName: (p) => p, data });
/** Flags as the CLI hands them over: commander's parsed options through flagsToConfig. */
const flags = (f: SpecFlags): ConfigSource => ({ label: "flags", keyName: flagName, data: flagsToConfig(f) });

function resolveOk(sources: ConfigSource[], env: NodeJS.ProcessEnv = {}): Config {
  const r = resolveConfig(sources, env);
  if (!r.ok) throw new Error(`expected a valid config, got ${JSON.stringify(r.issues, null, 2)}`);
  return r.config;
}

function resolveBad(sources: ConfigSource[], env: NodeJS.ProcessEnv = {}): { issues: ConfigIssue[]; conflict: boolean } {
  const r = resolveConfig(sources, env);
  if (r.ok) throw new Error(`expected config problems, got ${JSON.stringify(r.config)}`);
  return { issues: r.issues, conflict: r.conflict };
}

/** Builds `{a: {b: value}}` from "a.b". */
function at(path: string, value: unknown): Record<string, unknown> {
  const [head, ...rest] = path.split(".");
  if (head === undefined) throw new Error("empty path");
  return { [head]: rest.length === 0 ? value : at(rest.join("."), value) };
}

describe("the issue's example file", () => {
  it("is accepted and resolved", () => {
    const c = resolveOk([file(parse(ISSUE_EXAMPLE))]);
    expect(c.name).toBe("llama-serve");
    expect(c.tpu).toEqual({
      generation: "v6e",
      accelerator: "v6e-32",
      nodes: 8,
      spot: true,
      zones: ["us-east5-a", "us-central1-b"],
      project: "my-gcp-project",
      runtimeVersion: "v2-alpha-tpuv6e",
      maxRunHours: 48,
    });
    expect({ replicas: c.replicas, hosts: c.topology.hosts, numNodes: c.topology.sky.numNodes }).toEqual({
      replicas: 1,
      hosts: 8,
      numNodes: 1,
    });
    expect(c.model.path).toBe("meta-llama/Llama-3.1-70B-Instruct");
    expect(c.server).toEqual({
      port: 30000,
      distPort: 10011,
      tpSize: 32,
      args: ["--page-size=64", "--attention-backend=fa", "--mem-fraction-static=0.8"],
      env: { JAX_COMPILATION_CACHE_DIR: "/mnt/cache/jit" },
      // The API key is a secret too: its value must reach the hosts the same way.
      secrets: ["HF_TOKEN", "SGLANG_API_KEY"],
      secretsFile: "~/.config/tpu-deploy/secrets.env",
      apiKeySecret: "SGLANG_API_KEY",
      public: false,
      readyTimeoutMs: 45 * 60_000,
    });
    expect(c.relaunch).toEqual({ maxAttempts: 10, onDemandAfter: undefined, webhook: undefined });
    expect(c.warnings).toEqual([]);
  });

  it("gives the keys up compares with state.json, whatever order the keys were stored in", () => {
    // Canonical JSON: a state written by an earlier version with another key order still compares equal,
    // so up does not restart (or recreate) a deployment whose settings did not change.
    const c = resolveOk([file(parse(ISSUE_EXAMPLE))]);
    const reordered = JSON.parse(
      JSON.stringify(c, (_k, v: unknown) =>
        v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse()) : v,
      ),
    ) as typeof c;
    expect(Object.keys(reordered.server)[0]).not.toBe(Object.keys(c.server)[0]);
    expect(serverKey(reordered)).toBe(serverKey(c));
    expect(resourcesKey(reordered)).toBe(resourcesKey(c));
    expect(JSON.parse(serverKey(c))).toEqual({
      model: { path: "meta-llama/Llama-3.1-70B-Instruct" },
      server: {
        port: 30000,
        distPort: 10011,
        tpSize: 32,
        args: ["--page-size=64", "--attention-backend=fa", "--mem-fraction-static=0.8"],
        env: { JAX_COMPILATION_CACHE_DIR: "/mnt/cache/jit" },
        secrets: ["HF_TOKEN", "SGLANG_API_KEY"],
        secretsFile: "~/.config/tpu-deploy/secrets.env",
        apiKeySecret: "SGLANG_API_KEY",
        public: false,
      },
    });
    // A changed setting does change its key.
    expect(serverKey({ ...c, server: { ...c.server, port: 31000 } })).not.toBe(serverKey(c));
  });
});

describe("defaults when nothing is given", () => {
  it("v6e, Qwen/Qwen3-8B, on-demand, ports 30000/10011, one v6e-8", () => {
    const c = resolveOk([]);
    expect(c.name).toBe("sgl-v6e-1");
    expect(c.tpu.generation).toBe("v6e");
    expect(c.tpu.accelerator).toBe("v6e-8");
    expect(c.tpu.nodes).toBe(1);
    expect(c.tpu.spot).toBe(false);
    expect(c.tpu.project).toBeUndefined();
    expect(c.model.path).toBe("Qwen/Qwen3-8B");
    expect(c.server.port).toBe(30000);
    expect(c.server.distPort).toBe(10011);
    expect(c.server.tpSize).toBe(8);
    expect(c.server.args).toEqual([]);
    expect(c.server.env).toEqual({});
    expect(c.server.secrets).toEqual([]);
    expect(c.server.public).toBe(false);
    expect(c.launch).toEqual({ timeoutMs: 20 * 60_000, hostKeyWaitMs: 2 * 60_000, template: undefined });
    expect(c.relaunch.maxAttempts).toBe(10);
    expect(c.sglang).toEqual({
      repo: "https://github.com/sgl-project/sglang-jax.git",
      ref: "cddbf6f1",
      python: "3.12",
      dir: "~/sglang-jax",
    });
  });

  it("v6e zones come from SkyPilot's catalog (skypilot.md §7), tried in order", () => {
    const catalog = [
      "asia-east1-c",
      "asia-northeast1-b",
      "asia-south1-b",
      "asia-south1-c",
      "asia-southeast1-b",
      "europe-west4-a",
      "southamerica-east1-c",
      "southamerica-west1-a",
      "us-central1-a",
      "us-central1-b",
      "us-central1-c",
      "us-central2-b",
      "us-east1-d",
      "us-east4-a",
      "us-east5-a",
      "us-east5-b",
      "us-east5-c",
      "us-south1-a",
      "us-south1-c",
      "us-west1-c",
    ];
    expect([...V6E_CATALOG_ZONES].sort()).toEqual(catalog);
    const zones = resolveOk([]).tpu.zones;
    expect(zones).toEqual(DEFAULT_ZONES.v6e);
    expect(zones.length).toBeGreaterThan(1);
    for (const z of zones) expect(catalog).toContain(z);
  });

  it("v7 defaults to us-central1-c, one VM, and is named after its generation", () => {
    const c = resolveOk([flags({ tpu: "v7" })]);
    expect(c.tpu.zones).toEqual(["us-central1-c"]);
    expect(c.tpu.accelerator).toBe("tpu7x-8");
    expect(c.name).toBe("sgl-v7-1");
    expect(c.tpu.maxRunHours).toBe(48);
  });

  it("takes the project from GOOGLE_CLOUD_PROJECT unless tpu.project is set", () => {
    expect(resolveOk([], { GOOGLE_CLOUD_PROJECT: "from-env" }).tpu.project).toBe("from-env");
    expect(resolveOk([file({ tpu: { project: "from-file" } })], { GOOGLE_CLOUD_PROJECT: "from-env" }).tpu.project).toBe("from-file");
  });

  it("names a deployment after generation and hosts when no name is given", () => {
    expect(resolveOk([flags({ nodes: 2 })]).name).toBe("sgl-v6e-2");
    expect(resolveOk([flags({ nodes: 8 })]).name).toBe("sgl-v6e-8");
    expect(resolveOk([flags({ accelerator: "v6e-32" })]).name).toBe("sgl-v6e-8");
    expect(resolveOk([flags({ tpu: "v7", nodes: 4 })]).name).toBe("sgl-v7-4");
  });
});

describe("every key of the file", () => {
  // [path, value, what the resolved config shows]
  const cases: [string, unknown, (c: Config) => unknown, unknown][] = [
    ["name", "my-svc", (c) => c.name, "my-svc"],
    ["replicas", 3, (c) => [c.replicas, c.topology.hosts, c.name], [3, 1, "sgl-v6e-1x3"]],
    ["tpu.topology", "2x2x2", (c) => [c.tpu.generation, c.tpu.accelerator, c.tpu.nodes], ["v7", "tpu7x-16", 2]],
    ["tpu.generation", "v7", (c) => [c.tpu.generation, c.tpu.accelerator, c.tpu.zones], ["v7", "tpu7x-8", ["us-central1-c"]]],
    ["tpu.accelerator", "v6e-16", (c) => [c.tpu.accelerator, c.tpu.nodes], ["v6e-16", 4]],
    ["tpu.nodes", 16, (c) => [c.tpu.accelerator, c.tpu.nodes, c.server.tpSize], ["v6e-64", 16, 64]],
    ["tpu.spot", true, (c) => c.tpu.spot, true],
    ["tpu.zones", ["us-central1-a", "us-east5-c"], (c) => c.tpu.zones, ["us-central1-a", "us-east5-c"]],
    ["tpu.project", "proj-1", (c) => c.tpu.project, "proj-1"],
    ["tpu.runtimeVersion", "v2-alpha-tpuv6e-next", (c) => c.tpu.runtimeVersion, "v2-alpha-tpuv6e-next"],
    ["tpu.maxRunHours", 12, (c) => c.tpu.maxRunHours, 12],
    ["model.path", "google/gemma-3-27b-it", (c) => c.model.path, "google/gemma-3-27b-it"],
    ["server.port", 8080, (c) => c.server.port, 8080],
    ["server.distPort", 20000, (c) => c.server.distPort, 20000],
    ["server.tpSize", 8, (c) => c.server.tpSize, 8],
    ["server.args", ["--page-size=64", "--dtype", "bfloat16"], (c) => c.server.args, ["--page-size=64", "--dtype", "bfloat16"]],
    [
      "server.env",
      { JAX_PLATFORMS: "tpu", XLA_FLAGS: "--xla_dump_to=/tmp/x" },
      (c) => c.server.env,
      { JAX_PLATFORMS: "tpu", XLA_FLAGS: "--xla_dump_to=/tmp/x" },
    ],
    ["server.secrets", ["HF_TOKEN", "WANDB_API_KEY"], (c) => c.server.secrets, ["HF_TOKEN", "WANDB_API_KEY"]],
    ["server.secretsFile", "/etc/tpu-deploy/secrets.env", (c) => c.server.secretsFile, "/etc/tpu-deploy/secrets.env"],
    ["server.apiKeySecret", "SGLANG_API_KEY", (c) => [c.server.apiKeySecret, c.server.secrets], ["SGLANG_API_KEY", ["SGLANG_API_KEY"]]],
    ["server.public", true, (c) => c.server.public, true],
    ["server.readyTimeout", "1h30m", (c) => c.server.readyTimeoutMs, 90 * 60_000],
    ["sglang.repo", "https://example.com/sglang-jax.git", (c) => c.sglang.repo, "https://example.com/sglang-jax.git"],
    ["sglang.ref", "v0.0.3", (c) => c.sglang.ref, "v0.0.3"],
    ["sglang.python", "3.11", (c) => c.sglang.python, "3.11"],
    ["sglang.dir", "/opt/sglang-jax", (c) => c.sglang.dir, "/opt/sglang-jax"],
    ["launch.timeout", 90, (c) => c.launch.timeoutMs, 90_000],
    ["launch.template", "my.sky.yaml", (c) => c.launch.template, "my.sky.yaml"],
    ["launch.hostKeyWait", "30s", (c) => c.launch.hostKeyWaitMs, 30_000],
    ["relaunch.maxAttempts", 3, (c) => c.relaunch.maxAttempts, 3],
    ["relaunch.onDemandAfter", 2, (c) => c.relaunch.onDemandAfter, 2],
    ["relaunch.webhook", "https://hooks.example.com/tpu", (c) => c.relaunch.webhook, "https://hooks.example.com/tpu"],
    ["relaunch.backoff", "2m", (c) => c.relaunch.backoffMs, 120_000],
    ["relaunch.backoffMax", "1h", (c) => c.relaunch.backoffMaxMs, 3_600_000],
  ];

  it.each(cases)("%s: %j", (path, value, read, want) => {
    // server.tpSize only checks the derived value (its refusal is tested in topology.test.ts).
    if (path !== "server.tpSize") expect(read(resolveOk([]))).not.toEqual(want);
    expect(read(resolveOk([file(at(path, value))]))).toEqual(want);
  });

  it("the table covers every key of the schema", () => {
    const schema = configJsonSchema() as { properties: Record<string, { properties?: Record<string, unknown> }> };
    const keys = Object.entries(schema.properties).flatMap(([section, s]) =>
      s.properties ? Object.keys(s.properties).map((k) => `${section}.${k}`) : [section],
    );
    expect(cases.map(([p]) => p).sort()).toEqual(keys.sort());
  });
});

describe("bad types", () => {
  it.each([
    ["name", 42, "name", /expected string/],
    ["tpu", "v6e", "tpu", /expected object/],
    ["tpu.generation", "v5e", "tpu.generation", /"v6e"\|"v7"/],
    ["tpu.accelerator", 32, "tpu.accelerator", /expected string/],
    ["tpu.nodes", "8", "tpu.nodes", /expected number/],
    ["tpu.spot", "yes", "tpu.spot", /expected boolean/],
    ["tpu.zones", "us-east5-a", "tpu.zones", /expected array/],
    ["tpu.zones", [], "tpu.zones", /too small/i],
    ["tpu.zones", ["us-east5-a", 5], "tpu.zones.1", /expected string/],
    ["tpu.project", "", "tpu.project", /too small/i],
    ["tpu.maxRunHours", 0, "tpu.maxRunHours", />0/],
    ["model", "Qwen/Qwen3-8B", "model", /expected object/],
    ["model.path", "", "model.path", /too small/i],
    ["server.port", "30000", "server.port", /expected number/],
    ["server.distPort", true, "server.distPort", /expected number/],
    ["server.tpSize", "8", "server.tpSize", /expected number/],
    ["server.args", "--page-size=64", "server.args", /expected array/],
    ["server.args", ["--page-size", 64], "server.args.1", /expected string/],
    ["server.env", ["A=b"], "server.env", /expected record|expected object/],
    ["server.env", { A: 1 }, "server.env.A", /expected string/],
    ["server.secrets", "HF_TOKEN", "server.secrets", /expected array/],
    ["server.public", "true", "server.public", /expected boolean/],
    ["server.readyTimeout", true, "server.readyTimeout", /invalid input/i],
    ["launch.timeout", ["20m"], "launch.timeout", /invalid input/i],
    ["relaunch.maxAttempts", "10", "relaunch.maxAttempts", /expected number/],
  ])("%s: %j is refused at %s", (path, value, issuePath, message) => {
    const { issues } = resolveBad([file(at(path, value))]);
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toBe(issuePath);
    expect(issues[0]?.message).toMatch(message);
    // Says which source the problem is in.
    expect(issues[0]?.message).toContain("(tpu-deploy.yaml)");
  });

  it("a file that is not a mapping is refused", () => {
    expect(resolveBad([file("nodes: 2 is a string")]).issues[0]?.message).toMatch(/expected object/);
    expect(resolveBad([file([1, 2])]).issues[0]?.message).toMatch(/expected object/);
  });
});

describe("unknown keys", () => {
  it.each([
    [{ replica: 2 }, "replica"],
    [{ tpu: { zone: "us-east5-a" } }, "tpu.zone"],
    [{ tpu: { nodes: 2, chips: 8 } }, "tpu.chips"],
    [{ model: { name: "x" } }, "model.name"],
    [{ server: { Args: [] } }, "server.Args"],
    [{ sglang: { branch: "main" } }, "sglang.branch"],
    [{ launch: { retries: 3 } }, "launch.retries"],
    [{ relaunch: { max: 3 } }, "relaunch.max"],
  ])("%j is refused at %s", (data, path) => {
    const { issues } = resolveBad([file(data)]);
    expect(issues).toEqual([{ path, message: "unknown key (tpu-deploy.yaml)" }]);
  });

  it("reports each unknown key, top level and nested, at its own path", () => {
    const { issues } = resolveBad([file({ foo: 1, bar: 2, tpu: { a: 1, b: 2 } })]);
    expect(issues.map((i) => i.path).sort()).toEqual(["bar", "foo", "tpu.a", "tpu.b"]);
  });
});

describe("all problems are reported at once", () => {
  it("shape problems across sections", () => {
    const { issues } = resolveBad([file({ name: 7, tpu: { nodes: "two", spot: "yes" }, server: { port: "x" }, typo: true })]);
    expect(issues.map((i) => i.path).sort()).toEqual(["name", "server.port", "tpu.nodes", "tpu.spot", "typo"]);
  });

  it("rule problems across sections", () => {
    const { issues, conflict } = resolveBad([
      file({
        name: "Bad_Name",
        tpu: { nodes: 3, accelerator: "v6e-32", zones: ["us-east5", "us-east5-a", "us-east5-a"] },
        server: { port: 80, distPort: 65535, args: ["--port=1"], env: { "1BAD": "x" } },
        launch: { timeout: "soon" },
        relaunch: { maxAttempts: 0, webhook: "ftp://example.com" },
      }),
    ]);
    expect(conflict).toBe(false);
    expect(issues.map((i) => i.path).sort()).toEqual(
      [
        "name",
        "tpu.nodes",
        "tpu.zones.0",
        "tpu.zones",
        "server.port",
        "server.distPort",
        "server.args",
        "server.env.1BAD",
        "launch.timeout",
        "relaunch.maxAttempts",
        "relaunch.webhook",
      ].sort(),
    );
  });

  it("a rule that reads a refused key is skipped: with the default in its place it would blame what nobody wrote", () => {
    // tp-size 32 is right for 8 hosts; with nodes refused, 1 host would make it look wrong.
    expect(resolveBad([file({ tpu: { nodes: "8" }, server: { tpSize: 32 } })]).issues.map((i) => i.path)).toEqual(["tpu.nodes"]);
    // The default port 30000 would collide with 29995..30001.
    expect(resolveBad([file({ server: { port: "x", distPort: 29995 } })]).issues.map((i) => i.path)).toEqual(["server.port"]);
    expect(resolveBad([file({ tpu: { generation: "v8", spot: true } })]).issues.map((i) => i.path)).toEqual(["tpu.generation"]);
  });

  it("a bad value in the file is reported even when a flag overrides it", () => {
    expect(resolveBad([file({ server: { port: 80 } }), flags({ port: 31000 })]).issues).toEqual([
      { path: "server.port", message: "must be a whole number from 1024 to 65535; got 80 (tpu-deploy.yaml)" },
    ]);
  });

  it("problems in the file and in the flags", () => {
    const { issues } = resolveBad([file({ tpu: { nodes: "x" } }), { label: "flags", keyName: flagName, data: { tpu: { spot: "y" } } }]);
    expect(issues).toEqual([
      { path: "tpu.nodes", message: expect.stringContaining("(tpu-deploy.yaml)") },
      // A flag's problem is named by the flag.
      { path: "--spot", message: expect.stringContaining("(flags)") },
    ]);
  });
});

describe("flags override file keys one by one", () => {
  const base = {
    name: "from-file",
    tpu: { generation: "v6e", nodes: 8, spot: true, zones: ["us-east5-a", "us-east5-b"], project: "file-proj" },
    model: { path: "file/model" },
    server: {
      port: 31000,
      distPort: 12000,
      args: ["--page-size=64"],
      env: { FROM: "file" },
      secrets: ["HF_TOKEN"],
      secretsFile: "/file/secrets.env",
      apiKeySecret: "FILE_API_KEY",
      public: false,
      readyTimeout: "30m",
    },
    launch: { timeout: "10m", template: "file.sky.yaml" },
    sglang: { ref: "file-ref" },
  };

  const cases: [string, SpecFlags, (c: Config) => void][] = [
    ["--name", { name: "from-flag" }, (c) => (c.name = "from-flag")],
    ["--model", { model: "flag/model" }, (c) => (c.model.path = "flag/model")],
    ["--no-spot", { spot: false }, (c) => (c.tpu.spot = false)],
    ["--zone", { zone: ["us-central1-b"] }, (c) => (c.tpu.zones = ["us-central1-b"])],
    ["--project", { project: "flag-proj" }, (c) => (c.tpu.project = "flag-proj")],
    ["--port", { port: 32000 }, (c) => (c.server.port = 32000)],
    ["--dist-port", { distPort: 13000 }, (c) => (c.server.distPort = 13000)],
    ["--server-arg", { serverArg: ["--dtype=bfloat16"] }, (c) => (c.server.args = ["--dtype=bfloat16"])],
    ["--env", { env: ["FROM=flag"] }, (c) => (c.server.env = { FROM: "flag" })],
    ["--secret", { secret: ["OTHER"] }, (c) => (c.server.secrets = ["OTHER", "FILE_API_KEY"])],
    ["--secrets-file", { secretsFile: "/flag/s.env" }, (c) => (c.server.secretsFile = "/flag/s.env")],
    [
      "--api-key-secret",
      { apiKeySecret: "FLAG_API_KEY" },
      (c) => {
        c.server.apiKeySecret = "FLAG_API_KEY";
        c.server.secrets = ["HF_TOKEN", "FLAG_API_KEY"];
      },
    ],
    ["--public", { public: true }, (c) => (c.server.public = true)],
    ["--ready-timeout", { readyTimeout: "2h" }, (c) => (c.server.readyTimeoutMs = 2 * 3_600_000)],
    ["--launch-timeout", { launchTimeout: "5m" }, (c) => (c.launch.timeoutMs = 5 * 60_000)],
    ["--template", { template: "flag.sky.yaml" }, (c) => (c.launch.template = "flag.sky.yaml")],
    ["--sglang-ref", { sglangRef: "flag-ref" }, (c) => (c.sglang.ref = "flag-ref")],
    ["--tp-size", { tpSize: 32 }, () => undefined],
  ];

  it.each(cases)("%s changes only its key", (_flag, f, change) => {
    const expected = resolveOk([file(base)]);
    change(expected);
    expect(resolveOk([file(base), flags(f)])).toEqual(expected);
  });

  it.each([
    ["--nodes", { nodes: 16 }, { accelerator: "v6e-64", nodes: 16, replicas: 1 }],
    ["--accelerator", { accelerator: "v6e-32", nodes: undefined }, { accelerator: "v6e-32", nodes: 8, replicas: 1 }],
    ["--nodes 2", { nodes: 2 }, { accelerator: "v6e-4", nodes: 1, replicas: 2 }],
  ])("%s reshapes the slice but keeps the other file keys", (_flag, f, want) => {
    const c = resolveOk([file(base), flags(f)]);
    expect({ accelerator: c.tpu.accelerator, nodes: c.tpu.nodes, replicas: c.replicas }).toEqual(want);
    expect(c.name).toBe("from-file");
    expect(c.tpu.zones).toEqual(["us-east5-a", "us-east5-b"]);
    expect(c.server.port).toBe(31000);
  });

  it("--tpu v7 over a v6e file switches the generation and keeps file zones", () => {
    const c = resolveOk([file({ tpu: { generation: "v6e", zones: ["us-central1-c"] } }), flags({ tpu: "v7", nodes: 2 })]);
    expect([c.tpu.generation, c.tpu.accelerator, c.tpu.zones]).toEqual(["v7", "tpu7x-16", ["us-central1-c"]]);
  });

  it("no --spot/--no-spot leaves the file's spot alone", () => {
    expect(resolveOk([file({ tpu: { spot: true } }), flags({})]).tpu.spot).toBe(true);
    expect(resolveOk([file({ tpu: { spot: true } }), flags({ spot: false })]).tpu.spot).toBe(false);
  });
});

describe("contradictions between sources", () => {
  it("--tpu v7 with tpu.accelerator: v6e-16 in the file is a conflict naming both", () => {
    const { issues, conflict } = resolveBad([file({ tpu: { accelerator: "v6e-16" } }), flags({ tpu: "v7" })]);
    expect(conflict).toBe(true);
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toBe("tpu.generation");
    expect(issues[0]?.message).toContain("--tpu (flags) is v7");
    expect(issues[0]?.message).toContain("tpu.accelerator (tpu-deploy.yaml) is v6e-16");
  });

  it("tpu.generation: v7 in the file with --accelerator v6e-16 names both the other way round", () => {
    const { issues, conflict } = resolveBad([file({ tpu: { generation: "v7" } }), flags({ accelerator: "v6e-16" })]);
    expect(conflict).toBe(true);
    expect(issues[0]?.message).toContain("tpu.generation (tpu-deploy.yaml) is v7");
    expect(issues[0]?.message).toContain("--accelerator (flags) is v6e-16");
  });

  it("a flag that agrees with the file is no conflict", () => {
    const c = resolveOk([file({ tpu: { accelerator: "v6e-16" } }), flags({ tpu: "v6e" })]);
    expect(c.tpu.accelerator).toBe("v6e-16");
  });

  it("--tpu v7 --spot is refused with the reason", () => {
    const { issues } = resolveBad([flags({ tpu: "v7", spot: true })]);
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toBe("tpu.spot");
    expect(issues[0]?.message).toMatch(/managed instance group/i);
    expect(issues[0]?.message).toMatch(/does not support spot/);
  });

  it("tpu.spot: true in the file with --tpu v7 is refused too", () => {
    expect(resolveBad([file({ tpu: { spot: true } }), flags({ tpu: "v7" })]).issues.map((i) => i.path)).toEqual(["tpu.spot"]);
    // ...and --no-spot resolves it.
    expect(resolveOk([file({ tpu: { spot: true } }), flags({ tpu: "v7", spot: false })]).tpu.spot).toBe(false);
  });

  it.each(["v5e-8", "a100", "tpu-v5p-8"])("accelerator %s is neither v6e nor TPU7x", (accelerator) => {
    const { issues } = resolveBad([flags({ accelerator })]);
    expect(issues).toEqual([{ path: "tpu.accelerator", message: expect.stringMatching(/not a v6e or TPU7x slice type.*v6e-8/) }]);
  });

  it("SkyPilot's spelling tpu-v6e-32 and tpu7x-16 are understood; v7-16 has two readings and is refused", () => {
    expect(resolveOk([flags({ accelerator: "tpu-v6e-32" })]).tpu.accelerator).toBe("v6e-32");
    expect(resolveOk([flags({ accelerator: "tpu7x-16" })]).tpu).toMatchObject({ generation: "v7", accelerator: "tpu7x-16", nodes: 2 });
    const { issues } = resolveBad([flags({ accelerator: "v7-16" })]);
    expect(issues).toEqual([{ path: "tpu.accelerator", message: expect.stringMatching(/ambiguous.*tpu7x-32.*tpu7x-16.*--topology/) }]);
  });
});

describe("names", () => {
  it.each(["a", "llama-serve", "sgl-v6e-2", "a1", "x1-2-3", `a${"b".repeat(39)}`])("%j is valid", (name) => {
    expect(resolveOk([flags({ name })]).name).toBe(name);
  });

  it.each([
    ["41 characters", `a${"b".repeat(40)}`],
    ["uppercase", "Llama-serve"],
    ["trailing dash", "llama-"],
    ["leading digit", "1llama"],
    ["leading dash", "-llama"],
    ["underscore", "llama_serve"],
    ["dot", "llama.serve"],
    ["space", "llama serve"],
    ["empty", ""],
    ["unicode", "llamä"],
  ])("%s (%j) is refused", (_why, name) => {
    const { issues } = resolveBad([flags({ name })]);
    expect(issues).toHaveLength(1);
    expect(issues[0]?.path).toBe("--name");
    expect(issues[0]?.message).toMatch(/lowercase letters, digits and -.*at most 40 characters.*\(flags\)$/);
    expect(resolveBad([file({ name })]).issues.map((i) => i.path)).toEqual(["name"]);
  });
});

describe("server args that repeat orchestrator-owned flags", () => {
  it.each([
    ["--model-path=x", "--model-path"],
    ["--model-path", "--model-path"],
    ["--model", "--model"],
    ["--model=meta-llama/x", "--model"],
    ["--nnodes", "--nnodes"],
    ["--nnodes=2", "--nnodes"],
    ["--nnode", "--nnodes"],
    ["--nnode=4", "--nnodes"],
    ["--node-rank=1", "--node-rank"],
    ["--node-r", "--node-rank"],
    ["--dist-init-addr=10.0.0.1:10011", "--dist-init-addr"],
    ["--dist-init", "--dist-init-addr"],
    ["--tp-size=8", "--tp-size"],
    ["--tensor-parallel-size", "--tensor-parallel-size"],
    ["--tensor-parallel-size=16", "--tensor-parallel-size"],
    ["--tensor-para", "--tensor-parallel-size"],
    ["--host=127.0.0.1", "--host"],
    ["--port=8000", "--port"],
    ["--api-key=sk-123", "--api-key"],
    ["--api-k", "--api-key"],
  ])("%s is refused (it sets %s)", (arg, owned) => {
    const problems = ownedFlagConflicts([arg]);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(`'${arg}'`);
    expect(problems[0]).toContain(owned);
    expect(problems[0]).toMatch(/tpu-deploy sets itself; use .+ instead/);
    // ...and through the config, at server.args.
    const { issues } = resolveBad([flags({ serverArg: ["--page-size=64", arg] })]);
    expect(issues).toEqual([{ path: "server.args", message: problems[0] }]);
  });

  it("names every owned flag an ambiguous prefix could mean", () => {
    expect(ownedFlagConflicts(["--mod"])[0]).toMatch(/--model-path or --model/);
  });

  it.each([
    "--page-size=64",
    "--mem-fraction-static=0.8",
    "--attention-backend=fa",
    "--served-model-name=llama",
    "--trust-remote-code",
    "--context-length",
    "4096",
    "--dtype=bfloat16",
    "--download-dir=/mnt/models",
    "--",
    "-v",
    "--model-loader-extra-config={}",
  ])("%s passes", (arg) => {
    expect(ownedFlagConflicts([arg])).toEqual([]);
    expect(resolveOk([flags({ serverArg: [arg] })]).server.args).toEqual([arg]);
  });

  it("reports every offending arg, not just the first", () => {
    expect(ownedFlagConflicts(["--port=1", "--page-size=64", "--nnode=2", "--model", "m"])).toHaveLength(3);
  });

  it("--dist-timeout passes but is named as ignored by sglang-jax, in either form", () => {
    for (const args of [["--dist-timeout=600"], ["--dist-timeout", "600"]]) {
      const c = resolveOk([flags({ serverArg: args })]);
      expect(c.server.args).toEqual(args);
      expect(c.warnings.filter((w) => w.includes("--dist-timeout"))).toEqual([
        expect.stringMatching(/never uses it.*initialization_timeout/),
      ]);
    }
    expect(resolveOk([flags({ serverArg: ["--page-size=64"] })]).warnings.some((w) => w.includes("server.args"))).toBe(false);
  });
});

describe("secrets: names only", () => {
  it("keeps names and never a value, even when the value is in the environment", () => {
    const env = { HF_TOKEN: "hf_supersecretvalue", SGLANG_API_KEY: "sk-supersecret" };
    const c = resolveOk([flags({ secret: ["HF_TOKEN"], apiKeySecret: "SGLANG_API_KEY" })], env);
    expect(c.server.secrets).toEqual(["HF_TOKEN", "SGLANG_API_KEY"]);
    const text = JSON.stringify(c);
    expect(text).not.toContain("hf_supersecretvalue");
    expect(text).not.toContain("sk-supersecret");
  });

  it("lists an API-key secret that is also in secrets once", () => {
    expect(resolveOk([flags({ secret: ["K"], apiKeySecret: "K" })]).server.secrets).toEqual(["K"]);
  });

  it.each(["hf-token", "1TOKEN", "HF TOKEN", "HF_TOKEN=abc"])("secret name %j is refused", (name) => {
    const message = `'${name}' is not a valid environment variable name`;
    expect(resolveBad([flags({ secret: [name] })]).issues).toEqual([{ path: "--secret", message: `${message} (flags)` }]);
    expect(resolveBad([flags({ apiKeySecret: name })]).issues).toEqual([{ path: "--api-key-secret", message: `${message} (flags)` }]);
    expect(resolveBad([file({ server: { secrets: ["OK", name] } })]).issues).toEqual([
      { path: "server.secrets.1", message: `${message} (tpu-deploy.yaml)` },
    ]);
  });

  it("a secret that is also in server.env is refused (its value would be stored)", () => {
    const { issues } = resolveBad([flags({ secret: ["HF_TOKEN"], env: ["HF_TOKEN=hf_abc"] })]);
    expect(issues.map((i) => i.path)).toEqual(["server.env.HF_TOKEN"]);
  });
});

describe("ports, zones, env, relaunch", () => {
  it.each([
    ["server.port", 80],
    ["server.port", 70000],
    ["server.port", 30000.5],
    ["server.distPort", 1023],
    ["server.distPort", 65530],
  ])("%s %j is refused", (path, value) => {
    expect(resolveBad([file(at(path, value))]).issues.map((i) => i.path)).toEqual([path]);
  });

  it("refuses a server port inside the rendezvous range P..P+6", () => {
    expect(resolveBad([file({ server: { port: 10016 } })]).issues[0]?.message).toMatch(/10011\.\.10017/);
    expect(resolveOk([file({ server: { port: 10018 } })]).server.port).toBe(10018);
  });

  it.each(["us-east5", "US-EAST5-A", "useast5a", "us-east5-a "])("zone %j is refused", (zone) => {
    expect(resolveBad([flags({ zone: ["us-central1-b", zone] })]).issues).toEqual([
      { path: "--zone", message: `'${zone}' is not a GCP zone (like us-east5-b) (flags)` },
    ]);
    expect(resolveBad([file({ tpu: { zones: ["us-central1-b", zone] } })]).issues.map((i) => i.path)).toEqual(["tpu.zones.1"]);
  });

  it("refuses a zone listed twice", () => {
    expect(resolveBad([flags({ zone: ["us-east5-a", "us-east5-a"] })]).issues).toEqual([
      { path: "--zone", message: "lists a zone twice (flags)" },
    ]);
  });

  it("refuses env names that are not variable names and values with NUL", () => {
    const { issues } = resolveBad([file({ server: { env: { "A-B": "x", OK: "a\0b" } } })]);
    expect(issues.map((i) => i.path)).toEqual(["server.env.A-B", "server.env.OK"]);
  });

  it.each([
    ["relaunch.maxAttempts", 0],
    ["relaunch.maxAttempts", 2.5],
    ["relaunch.onDemandAfter", 0],
    ["relaunch.webhook", "not a url"],
    ["relaunch.backoff", "soon"],
    ["relaunch.backoffMax", "0s"],
    ["relaunch.webhook", "ftp://example.com/x"],
    // Relative to what? SkyPilot's setup runs in ~/sky_workdir, the server start in $HOME.
    ["sglang.dir", "sglang-jax"],
    ["sglang.dir", "./sglang-jax"],
    ["sglang.dir", "~/../etc"],
    ["sglang.dir", "~/a b"],
    ["sglang.dir", "/opt/$(id)"],
    ["sglang.dir", "~user/x"],
  ])("%s %j is refused", (path, value) => {
    expect(resolveBad([file(at(path, value))]).issues.map((i) => i.path)).toEqual([path]);
  });
});

describe("durations", () => {
  it.each([
    ["90s", 90_000],
    ["20m", 1_200_000],
    ["1h30m", 5_400_000],
    ["2d", 172_800_000],
    ["500ms", 500],
    ["1.5h", 5_400_000],
    ["1h0m30s", 3_630_000],
    ["90", 90_000],
    [" 5m ", 300_000],
    [90, 90_000],
    [0, 0],
  ])("parseDuration(%j) = %i ms", (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });

  it.each(["", "soon", "5 m", "m5", "-5s", "1h30", "1x", "1h 30m", "PT5M", -1, Number.NaN, Number.POSITIVE_INFINITY])(
    "parseDuration(%j) is not a duration",
    (input) => {
      expect(parseDuration(input)).toBeUndefined();
    },
  );

  it.each([
    ["24d", 24 * 86_400_000],
    [MAX_TIMER_MS / 1000, MAX_TIMER_MS],
    ["1ms", 1],
  ])("timerDuration(%j) waits %i ms", (input, ms) => {
    expect(timerDuration(input)).toEqual({ ok: true, ms });
  });

  // Past 2^31-1 ms, setTimeout and AbortSignal.timeout fire after 1 ms instead: a 30-day timeout would end a run at once.
  it.each([
    ["30d", /too long.*2\^31-1 ms/],
    ["25d", /too long/],
    [MAX_TIMER_MS / 1000 + 0.001, /too long/],
    ["0s", /is not a duration/],
    [0, /is not a duration/],
    ["soon", /is not a duration/],
  ])("timerDuration(%j) is refused", (input, problem) => {
    const d = timerDuration(input);
    expect(d.ok).toBe(false);
    if (!d.ok) expect(d.problem).toMatch(problem);
  });

  it.each([
    [500, "500ms"],
    [90_000, "1m30s"],
    [3_600_000, "1h"],
    [5_400_000, "1h30m"],
    [45_000, "45s"],
  ])("formatDuration(%i) = %j", (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it.each([
    ["server.readyTimeout", "soon"],
    ["server.readyTimeout", "0s"],
    ["server.readyTimeout", 0],
    ["launch.timeout", "-5m"],
  ])("%s %j is refused with examples", (path, value) => {
    expect(resolveBad([file(at(path, value))]).issues).toEqual([
      { path, message: expect.stringMatching(/is not a duration \(examples: 90s/) },
    ]);
  });

  it.each([
    ["server.readyTimeout", "30d"],
    ["launch.timeout", 30 * 86_400],
    ["relaunch.backoff", "25d"],
    ["relaunch.backoffMax", "24d20h32m"],
  ])("%s %j is refused: longer than a timer can wait", (path, value) => {
    expect(resolveBad([file(at(path, value))]).issues).toEqual([{ path, message: expect.stringMatching(/is too long: .*24\.8 days/) }]);
  });
});

describe("JSON Schema of tpu-deploy.yaml", () => {
  type JsonSchema = Record<string, unknown>;
  const ANNOTATIONS = new Set(["$schema", "description", "default"]);
  const KEYWORDS = new Set([
    "type",
    "properties",
    "additionalProperties",
    "items",
    "enum",
    "anyOf",
    "minItems",
    "uniqueItems",
    "minLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "propertyNames",
  ]);

  /** A validator for the keywords the schema uses; it refuses any keyword it does not know, so it cannot pass by ignoring one. */
  function validate(schema: JsonSchema, value: unknown, path = "$"): string[] {
    for (const k of Object.keys(schema)) {
      if (!ANNOTATIONS.has(k) && !KEYWORDS.has(k)) throw new Error(`validator does not know keyword ${k} at ${path}`);
    }
    const errors: string[] = [];
    const types = schema.type === undefined ? undefined : ([] as unknown[]).concat(schema.type);
    const typeOf = (v: unknown) => (Array.isArray(v) ? "array" : v === null ? "null" : typeof v === "object" ? "object" : typeof v);
    const typeMatches = (t: unknown) => t === typeOf(value) || (t === "integer" && Number.isInteger(value));
    if (types && !types.some(typeMatches)) return [`${path}: expected ${types.join("|")}, got ${typeOf(value)}`];
    if (Array.isArray(schema.anyOf) && !schema.anyOf.some((sub: JsonSchema) => validate(sub, value, path).length === 0))
      errors.push(`${path}: matches no alternative`);
    if (Array.isArray(schema.enum) && !schema.enum.includes(value)) errors.push(`${path}: not one of ${schema.enum.join(", ")}`);
    if (typeof value === "string") {
      if (typeof schema.minLength === "number" && value.length < schema.minLength) errors.push(`${path}: too short`);
      if (typeof schema.pattern === "string" && !new RegExp(schema.pattern, "u").test(value)) errors.push(`${path}: does not match`);
    }
    if (typeof value === "number") {
      if (typeof schema.exclusiveMinimum === "number" && value <= schema.exclusiveMinimum) errors.push(`${path}: too small`);
      if (typeof schema.minimum === "number" && value < schema.minimum) errors.push(`${path}: too small`);
      if (typeof schema.maximum === "number" && value > schema.maximum) errors.push(`${path}: too large`);
    }
    if (Array.isArray(value)) {
      if (typeof schema.minItems === "number" && value.length < schema.minItems) errors.push(`${path}: too few items`);
      if (schema.uniqueItems === true && new Set(value).size !== value.length) errors.push(`${path}: repeats an item`);
      value.forEach((item, i) => {
        errors.push(...validate(schema.items as JsonSchema, item, `${path}[${i}]`));
      });
    }
    if (typeOf(value) === "object") {
      const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (schema.propertyNames) errors.push(...validate(schema.propertyNames as JsonSchema, k, `${path}.${k}(name)`));
        const sub = props[k];
        if (sub) errors.push(...validate(sub, v, `${path}.${k}`));
        else if (schema.additionalProperties === false) errors.push(`${path}: unknown property ${k}`);
        else if (typeof schema.additionalProperties === "object")
          errors.push(...validate(schema.additionalProperties as JsonSchema, v, `${path}.${k}`));
      }
    }
    return errors;
  }

  const sections = () =>
    (configJsonSchema() as { properties: Record<string, JsonSchema & { properties?: Record<string, JsonSchema> }> }).properties;

  it("stays in sync with the committed copy", async () => {
    await expect(`${JSON.stringify(configJsonSchema(), null, 2)}\n`).toMatchFileSnapshot("../__snapshots__/tpu-deploy.schema.json");
  });

  it("the issue's example validates", () => {
    expect(validate(configJsonSchema() as JsonSchema, parse(ISSUE_EXAMPLE))).toEqual([]);
  });

  it("every section and key has a description", () => {
    for (const [section, s] of Object.entries(sections())) {
      expect(s.description, section).toEqual(expect.any(String));
      for (const [key, sub] of Object.entries(s.properties ?? {})) expect(sub.description, `${section}.${key}`).toEqual(expect.any(String));
    }
  });

  it("shows the defaults resolution applies: a file of every default resolves like no file at all", () => {
    const defaults: Record<string, Record<string, unknown>> = {};
    for (const [section, s] of Object.entries(sections())) {
      for (const [key, sub] of Object.entries(s.properties ?? {})) {
        if ("default" in sub) defaults[section] = { ...defaults[section], [key]: sub.default };
      }
    }
    expect(Object.entries(defaults).flatMap(([section, keys]) => Object.keys(keys).map((k) => `${section}.${k}`))).toEqual([
      "tpu.generation",
      "tpu.spot",
      "tpu.runtimeVersion",
      "tpu.maxRunHours",
      "model.path",
      "server.port",
      "server.distPort",
      "server.args",
      "server.env",
      "server.secrets",
      "server.public",
      "server.readyTimeout",
      "sglang.repo",
      "sglang.ref",
      "sglang.python",
      "sglang.dir",
      "launch.timeout",
      "launch.hostKeyWait",
      "relaunch.maxAttempts",
    ]);
    expect(resolveOk([file(defaults)])).toEqual(resolveOk([]));
  });

  it.each([
    [{ tpu: { nodes: "8" } }, "$.tpu.nodes: expected integer, got string"],
    [{ tpu: { nodes: 2.5 } }, "$.tpu.nodes: expected integer, got number"],
    [{ tpu: { nodes: 0 } }, "$.tpu.nodes: too small"],
    [{ tpu: { generation: "v5e" } }, "$.tpu.generation: not one of v6e, v7"],
    [{ tpu: { zone: "x" } }, "$.tpu: unknown property zone"],
    [{ tpu: { zones: [] } }, "$.tpu.zones: too few items"],
    [{ tpu: { zones: ["us-east5"] } }, "$.tpu.zones[0]: does not match"],
    [{ tpu: { zones: ["us-east5-a", "us-east5-a"] } }, "$.tpu.zones: repeats an item"],
    [{ name: "Bad_Name" }, "$.name: does not match"],
    [{ server: { port: 80 } }, "$.server.port: too small"],
    [{ server: { port: 30000.5 } }, "$.server.port: expected integer, got number"],
    [{ server: { distPort: 65530 } }, "$.server.distPort: too large"],
    [{ server: { env: { A: 1 } } }, "$.server.env.A: expected string, got number"],
    [{ server: { env: { "A-B": "x" } } }, "$.server.env.A-B(name): does not match"],
    [{ server: { secrets: ["hf-token"] } }, "$.server.secrets[0]: does not match"],
    [{ server: { readyTimeout: true } }, "$.server.readyTimeout: matches no alternative"],
    [{ server: { readyTimeout: "soon" } }, "$.server.readyTimeout: matches no alternative"],
    [{ launch: { timeout: 30 * 86_400 } }, "$.launch.timeout: matches no alternative"],
    [{ sglang: { dir: "~/../etc" } }, "$.sglang.dir: does not match"],
    [{ relaunch: { maxAttempts: 0 } }, "$.relaunch.maxAttempts: too small"],
    [{ relaunch: { webhook: "ftp://example.com/x" } }, "$.relaunch.webhook: does not match"],
    [{ replica: 2 }, "$: unknown property replica"],
  ])("rejects what zod rejects: %j", (doc, error) => {
    expect(validate(configJsonSchema() as JsonSchema, doc)).toEqual([error]);
    expect(configSchema.safeParse(doc).success).toBe(false);
  });
});
