import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { flagName, flagsToConfig, type SpecFlags } from "../../src/cli/config-flags.js";
import { type Config, resolveConfig } from "../../src/core/config.js";
import { bindRank, commandLine, planDeploy, RANK0_IP, serverArgv, setupMarker, skyLaunchArgv, venvPython } from "../../src/core/plan.js";

const V6E = readFileSync(join(import.meta.dirname, "..", "..", "templates", "v6e.sky.yaml"), "utf8");
const V7 = readFileSync(join(import.meta.dirname, "..", "..", "templates", "v7.sky.yaml"), "utf8");

function config(f: SpecFlags, fileData?: unknown): Config {
  const sources = [];
  if (fileData !== undefined) sources.push({ label: "tpu-deploy.yaml", keyName: (p: string) => p, data: fileData });
  sources.push({ label: "flags", keyName: flagName, data: flagsToConfig(f) });
  const r = resolveConfig(sources, {});
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.config;
}

function plan(c: Config) {
  const r = planDeploy(c, { text: c.tpu.generation === "v7" ? V7 : V6E, name: "t" }, { taskPath: () => "/state/sky.yaml" });
  if (!r.ok) throw new Error(r.errors.join("\n"));
  return r.plan;
}

function bashWords(commandLine: string): string[] {
  const out = execFileSync("bash", ["-c", `printf '%s\\0' ${commandLine}`], { encoding: "utf8" });
  return out.slice(0, -1).split("\0");
}

describe("ranks and replicas: rank = TPU worker number within one replica's slice", () => {
  const ranksOf = (flags: SpecFlags) => plan(config(flags)).replicas.map((r) => r.ranks.map((k) => [k.rank, k.workerId]));
  it.each([
    { flags: {}, want: [[[0, 0]]] },
    // No 2-host v6e slice: two replicas of one host each, each rank 0 of its own slice.
    { flags: { nodes: 2 }, want: [[[0, 0]], [[0, 0]]] },
    {
      flags: { nodes: 4 },
      want: [
        [
          [0, 0],
          [1, 1],
          [2, 2],
          [3, 3],
        ],
      ],
    },
    {
      flags: { nodes: 4, replicas: 2 },
      want: [
        [
          [0, 0],
          [1, 1],
          [2, 2],
          [3, 3],
        ],
        [
          [0, 0],
          [1, 1],
          [2, 2],
          [3, 3],
        ],
      ],
    },
    {
      flags: { tpu: "v7", nodes: 4 },
      want: [
        [
          [0, 0],
          [1, 1],
          [2, 2],
          [3, 3],
        ],
      ],
    },
  ] as { flags: SpecFlags; want: number[][][] }[])("$flags → per replica [rank, worker] $want", ({ flags, want }) => {
    expect(ranksOf(flags)).toEqual(want);
  });

  it("every replica is its own SkyPilot cluster: the name for replica 0, -r<R> after; labels name the replica", () => {
    const p = plan(config({ name: "svc", nodes: 4, replicas: 3 }));
    expect(p.replicas.map((r) => r.cluster)).toEqual(["svc", "svc-r1", "svc-r2"]);
    for (const r of p.replicas) {
      for (const l of r.launches) {
        expect(l.skyArgv[l.skyArgv.indexOf("-c") + 1]).toBe(r.cluster);
        expect((l.task.resources as { labels: Record<string, string> }).labels).toMatchObject({
          "tpu-deploy": "svc",
          "tpu-deploy-replica": String(r.replica),
        });
        expect(l.task.num_nodes).toBe(1);
      }
      // --nnodes and --tp-size are the slice's, never the sum over replicas.
      const argv = r.ranks[0]?.argv ?? [];
      expect(argv[argv.indexOf("--nnodes") + 1]).toBe("4");
      expect(argv[argv.indexOf("--tp-size") + 1]).toBe("16");
    }
  });

  it("spot replicas start in different zones, so one preemption wave does not take them all", () => {
    const zones = ["us-east5-a", "us-east5-b", "us-central1-b"];
    const spot = plan(config({ nodes: 2, spot: true, zone: zones }));
    expect(spot.replicas.map((r) => r.launches.map((l) => l.zone))).toEqual([
      ["us-east5-a", "us-east5-b", "us-central1-b"],
      ["us-east5-b", "us-central1-b", "us-east5-a"],
    ]);
    const onDemand = plan(config({ nodes: 2, zone: zones }));
    expect(onDemand.replicas.map((r) => r.launches[0]?.zone)).toEqual(["us-east5-a", "us-east5-a"]);
  });

  it("the layout sentence travels with the plan", () => {
    expect(plan(config({ nodes: 2 })).layout).toMatch(/^2 replicas, each one v6e-4: 1 host, 4 chips, 128 GB HBM/);
  });
});

describe("the server command", () => {
  it("multi-host: every orchestrator-owned flag, in order, then the user's args", () => {
    const c = config({
      nodes: 4,
      port: 31000,
      distPort: 12000,
      serverArg: ["--page-size=64", "--dtype", "bfloat16"],
      model: "Qwen/Qwen3-32B",
    });
    expect(serverArgv(c, 2, "10.0.0.5:12000")).toEqual([
      "~/sglang-jax/.venv/bin/python",
      "-u",
      "-m",
      "sgl_jax.launch_server",
      "--model-path",
      "Qwen/Qwen3-32B",
      "--nnodes",
      "4",
      "--node-rank",
      "2",
      "--dist-init-addr",
      "10.0.0.5:12000",
      "--tp-size",
      "16",
      "--host",
      "0.0.0.0",
      "--port",
      "31000",
      "--page-size=64",
      "--dtype",
      "bfloat16",
    ]);
  });

  it("the interpreter and the setup marker live under sglang.dir, never relative to a working directory", () => {
    const c = config({});
    expect(venvPython(c)).toBe("~/sglang-jax/.venv/bin/python");
    expect(setupMarker(c)).toBe("~/sglang-jax/.venv/.tpu-deploy-installed-cddbf6f1");
    const custom = config({}, { sglang: { dir: "/opt/sgl/", ref: "release/v0.2" } });
    expect(venvPython(custom)).toBe("/opt/sgl/.venv/bin/python");
    expect(setupMarker(custom)).toBe("/opt/sgl/.venv/.tpu-deploy-installed-release_v0.2");
    expect(serverArgv(custom, 0, "")[0]).toBe("/opt/sgl/.venv/bin/python");
  });

  it("single host: no --dist-init-addr", () => {
    const argv = serverArgv(config({}), 0, "10.0.0.5:10011");
    expect(argv).not.toContain("--dist-init-addr");
    expect(argv).not.toContain("10.0.0.5:10011");
    expect(argv.slice(4)).toEqual([
      "--model-path",
      "Qwen/Qwen3-8B",
      "--nnodes",
      "1",
      "--node-rank",
      "0",
      "--tp-size",
      "8",
      "--host",
      "0.0.0.0",
      "--port",
      "30000",
    ]);
  });

  it.each([
    [{ nodes: 2 }, false], // two replicas of one host each
    [{ nodes: 4 }, true],
    [{ nodes: 1 }, false],
    [{ accelerator: "v6e-16" }, true],
    [{ tpu: "v7", nodes: 1 }, false],
    [{ tpu: "v7", nodes: 2 }, true],
  ] as [SpecFlags, boolean][])("%j: --dist-init-addr only when nnodes > 1 (%s)", (flags, multi) => {
    const c = config(flags);
    const argv = serverArgv(c, 0, "10.1.2.3:10011");
    expect(argv.includes("--dist-init-addr")).toBe(multi);
    expect(argv[argv.indexOf("--nnodes") + 1]).toBe(String(c.topology.hosts));
  });

  it("never carries the API key, whose value the wrapper injects", () => {
    const argv = serverArgv(config({ apiKeySecret: "SGLANG_API_KEY" }), 0, "x");
    expect(argv.some((a) => a.startsWith("--api-key"))).toBe(false);
  });

  it("the quoted command is the argv, word for word, through a real bash", () => {
    const c = config({
      nodes: 2,
      model: `/models/it's "a" $(model); rm -rf ~\n\`x\``,
      serverArg: ["--chat-template={{ '$(id)' }}", "--served-model-name=a b;c", "--download-dir=/mnt/ü/\\x"],
    });
    for (const rank of [0, 1]) {
      const argv = serverArgv(c, rank, "<rank-0-internal-ip>:10011");
      expect(bashWords(commandLine(argv))).toEqual(argv);
    }
  });
});

describe("the deploy plan", () => {
  it("v6e-16: four ranks with placeholders, one dist-init address on rank 0's distPort", () => {
    const p = plan(config({ nodes: 4, distPort: 12000 }));
    const r = p.replicas[0];
    if (!r) throw new Error("no replica");
    expect(p.replicas).toHaveLength(1);
    expect(r.distInitAddr).toBe(`${RANK0_IP}:12000`);
    expect(r.portCheck).toEqual([12000, 12005, 12006]);
    expect(r.ranks.map((k) => [k.rank, k.host])).toEqual([
      [0, "TPU worker 0"],
      [1, "TPU worker 1"],
      [2, "TPU worker 2"],
      [3, "TPU worker 3"],
    ]);
    for (const k of r.ranks) {
      expect(k.argv[k.argv.indexOf("--node-rank") + 1]).toBe(String(k.rank));
      expect(k.argv[k.argv.indexOf("--dist-init-addr") + 1]).toBe(`${RANK0_IP}:12000`);
      expect(k.argv[k.argv.indexOf("--tp-size") + 1]).toBe("16");
      // What the host runs: the same argv with rank 0's address filled in, nothing else changed.
      const bound = bindRank(k, "10.1.0.7");
      expect(bound[bound.indexOf("--dist-init-addr") + 1]).toBe("10.1.0.7:12000");
      expect(bound.filter((a, i) => a !== k.argv[i])).toEqual(["10.1.0.7:12000"]);
    }
    expect(r.launches[0]?.taskYaml).toContain("num_nodes: 1");
    expect(r.launches[0]?.taskYaml).toContain("accelerators: tpu-v6e-16");
    expect(r.prerequisites).toEqual({
      python: "~/sglang-jax/.venv/bin/python",
      marker: "~/sglang-jax/.venv/.tpu-deploy-installed-cddbf6f1",
    });
  });

  it("--nodes 2 on v6e: two replicas of one v6e-4 host, each its own cluster, --nnodes 1 --tp-size 4, no rendezvous", () => {
    const p = plan(config({ nodes: 2 }));
    expect(p.layout).toMatch(/^2 replicas, each one v6e-4/);
    expect(p.replicas.map((r) => r.cluster)).toEqual(["sgl-v6e-2", "sgl-v6e-2-r1"]);
    for (const r of p.replicas) {
      expect(r.distInitAddr).toBe("");
      expect(r.ranks).toHaveLength(1);
      const argv = r.ranks[0]?.argv ?? [];
      expect(argv[argv.indexOf("--nnodes") + 1]).toBe("1");
      expect(argv[argv.indexOf("--tp-size") + 1]).toBe("4");
      expect(argv).not.toContain("--dist-init-addr");
      expect(r.launches[0]?.taskYaml).toContain("num_nodes: 1");
    }
  });

  it("one host: no rendezvous address and no port check", () => {
    const r = plan(config({})).replicas[0];
    expect(r?.distInitAddr).toBe("");
    expect(r?.portCheck).toEqual([]);
    expect(r?.ranks[0]?.argv).not.toContain("--dist-init-addr");
  });

  it("renders the task and the sky argv for every zone, in the order they are tried", () => {
    const p = plan(config({ zone: ["us-central1-b", "us-east5-a"] }));
    expect(p.zones).toEqual(["us-central1-b", "us-east5-a"]);
    const launches = p.replicas[0]?.launches ?? [];
    expect(launches.map((l) => l.zone)).toEqual(["us-central1-b", "us-east5-a"]);
    expect(launches.map((l) => l.skyArgv[l.skyArgv.indexOf("--infra") + 1])).toEqual([
      "gcp/us-central1/us-central1-b",
      "gcp/us-east5/us-east5-a",
    ]);
    expect(launches.map((l) => (l.task.resources as { infra: string }).infra)).toEqual([
      "gcp/us-central1/us-central1-b",
      "gcp/us-east5/us-east5-a",
    ]);
    for (const l of launches) expect(l.skyArgv[1]).toBe("/state/sky.yaml");
  });

  it("a relaunch's zone order and on-demand fallback replace the config's for that plan only", () => {
    const c = config({ spot: true, zone: ["us-east5-a", "us-central1-b"] });
    const r = planDeploy(c, { text: V6E, name: "t" }, { taskPath: () => "/t", zones: ["us-central1-b", "us-east5-a"], spot: false });
    if (!r.ok) throw new Error(r.errors.join());
    expect(r.plan.zones).toEqual(["us-central1-b", "us-east5-a"]);
    expect(r.plan.replicas[0]?.spot).toBe(false);
    expect(r.plan.replicas[0]?.launches.every((l) => !l.skyArgv.includes("--use-spot") && l.task.resources !== undefined)).toBe(true);
  });

  it("refuses to plan a broken template", () => {
    const r = planDeploy(config({}), { text: "name: ${nope}\n", name: "t" }, { taskPath: () => "/x" });
    expect(r.ok).toBe(false);
  });
});

describe("the sky launch argv", () => {
  it("on demand, no env, no secrets", () => {
    expect(skyLaunchArgv(config({ name: "svc" }), "/state/sky.yaml", "us-east5-b")).toEqual([
      "launch",
      "/state/sky.yaml",
      "-c",
      "svc",
      "--infra",
      "gcp/us-east5/us-east5-b",
      "-y",
    ]);
  });

  it("spot and env K=V in order; never a secret, not even by name (SkyPilot writes task secrets to disk on the head)", () => {
    const c = config({
      name: "svc",
      spot: true,
      env: ["JAX_COMPILATION_CACHE_DIR=/mnt/cache/jit", "EMPTY=", "EQ=a=b"],
      secret: ["HF_TOKEN"],
      apiKeySecret: "SGLANG_API_KEY",
    });
    expect(skyLaunchArgv(c, "task.yaml", "us-central1-a")).toEqual([
      "launch",
      "task.yaml",
      "-c",
      "svc",
      "--infra",
      "gcp/us-central1/us-central1-a",
      "--use-spot",
      "-y",
      "--env",
      "JAX_COMPILATION_CACHE_DIR=/mnt/cache/jit",
      "--env",
      "EMPTY=",
      "--env",
      "EQ=a=b",
    ]);
    // A relaunch can fall back to on demand for one launch.
    expect(skyLaunchArgv(c, "task.yaml", "us-central1-a", false)).not.toContain("--use-spot");
  });

  it("env values with shell syntax stay one argv element each", () => {
    const value = "a b; $(id) `x` 'q' \"d\"\nnext";
    const argv = skyLaunchArgv(config({ env: [`WEIRD=${value}`] }), "t", "us-east5-a");
    expect(argv.slice(-2)).toEqual(["--env", `WEIRD=${value}`]);
  });

  it.each([
    {},
    { nodes: 2 },
    { nodes: 8, spot: true },
    { accelerator: "v6e-32", nodes: 8, replicas: 2, spot: true, secret: ["HF_TOKEN"] },
    { tpu: "v7", nodes: 4 },
    { env: ["A=--down", "B=-i"], secret: ["DOWN"] },
  ] as SpecFlags[])("never autostops or tears down: %j", (flags) => {
    const c = config(flags);
    for (const zone of c.tpu.zones) {
      for (const spot of [true, false]) {
        const argv = skyLaunchArgv(c, "t", zone, spot);
        for (const forbidden of ["-i", "--idle-minutes-to-autostop", "--down", "--detach-run", "-d"]) {
          expect(argv).not.toContain(forbidden);
        }
        expect(argv.some((a) => a.startsWith("--idle-minutes-to-autostop=") || a.startsWith("--down="))).toBe(false);
      }
    }
  });

  it("never carries a secret value, even when the environment has it", () => {
    const secretValue = "hf_DO_NOT_LEAK_0123456789";
    const sources = [{ label: "flags", keyName: flagName, data: flagsToConfig({ secret: ["HF_TOKEN"], apiKeySecret: "API_KEY" }) }];
    const r = resolveConfig(sources, { HF_TOKEN: secretValue, API_KEY: secretValue });
    if (!r.ok) throw new Error("config");
    const p = planDeploy(r.config, { text: V6E, name: "t" }, { taskPath: () => "/x" });
    if (!p.ok) throw new Error("plan");
    expect(JSON.stringify(p.plan)).not.toContain(secretValue);
    const first = p.plan.replicas[0]?.launches[0];
    expect(first?.skyArgv).not.toContain("--secret");
    expect(first?.task).not.toHaveProperty("secrets");
  });
});
