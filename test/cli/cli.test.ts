import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { ERROR_CODES } from "../../src/errors.js";
import { firstLaunch, makeTempDir, type PlanDoc, runCli } from "../helpers/run-cli.js";

const PACKAGE = JSON.parse(readFileSync(join(import.meta.dirname, "..", "..", "package.json"), "utf8")) as { version: string };

type Ok<R> = { version: number; command: string; ok: true; result: R };
type Fail = { version: number; command: string; ok: false; error: { code: string; message: string; hint?: string } };
type DryRun = PlanDoc;

/** `--json` must print exactly one JSON document: JSON.parse of the whole stdout fails on two, or on stray text. */
function oneJson<T>(stdout: string): T {
  expect(stdout.endsWith("}\n")).toBe(true);
  return JSON.parse(stdout) as T;
}

function expectFailure(doc: Fail, command: string, code: string): void {
  expect(Object.keys(doc).sort()).toEqual(["command", "error", "ok", "version"]);
  expect(doc).toMatchObject({ version: 1, command, ok: false, error: { code } });
  expect(Object.keys(doc.error).every((k) => ["code", "message", "hint"].includes(k))).toBe(true);
  expect(doc.error.message).toEqual(expect.any(String));
  expect(ERROR_CODES).toContain(doc.error.code);
}

function bashWords(commandLine: string): string[] {
  return execFileSync("bash", ["-c", `printf '%s\\0' ${commandLine}`], { encoding: "utf8" })
    .slice(0, -1)
    .split("\0");
}

/** Splits the human dry-run output into its sections. */
function sections(stdout: string) {
  const yamlStart = stdout.indexOf("# --- sky.yaml");
  const skyStart = stdout.indexOf("# --- sky launch");
  const ranksStart = stdout.indexOf("# --- ranks");
  expect([yamlStart, skyStart, ranksStart].every((i) => i >= 0)).toBe(true);
  return {
    header: stdout.slice(0, yamlStart),
    yaml: stdout.slice(stdout.indexOf("\n", yamlStart) + 1, skyStart),
    sky: stdout.slice(stdout.indexOf("\n", skyStart) + 1, ranksStart).trimEnd(),
    ranks: stdout.slice(stdout.indexOf("\n", ranksStart) + 1),
  };
}

describe("up --nodes 2 --dry-run with no config file", () => {
  it("prints the layout, the sky.yaml, one sky launch per replica and the rank of each; nothing on stderr", async () => {
    const res = await runCli(["up", "--nodes", "2", "--dry-run"]);
    expect(res.code).toBe(0);
    expect(existsSync(join(res.cwd, "tpu-deploy.yaml"))).toBe(false);
    const s = sections(res.stdout);
    // One sentence says what --nodes 2 became on v6e, and the one-slice alternatives.
    expect(s.header).toContain(
      "# sgl-v6e-2: 2 replicas, each one v6e-4: 1 host, 4 chips, 128 GB HBM, serving the whole model (8 chips billed in total); " +
        "no v6e slice has 2 hosts; for one slice use --nodes 4 (one v6e-16) or --tpu v7 --nodes 2 (one 2x2x2 slice)\n" +
        "# --nnodes 1, --tp-size 4, on-demand\n",
    );

    const task = parse(s.yaml) as { num_nodes: number; resources: { accelerators: string; use_spot: boolean } };
    expect(task.num_nodes).toBe(1);
    expect(task.resources).toMatchObject({ accelerators: "tpu-v6e-4", use_spot: false });

    // The printed sky command is exactly the argv, read back by a real shell.
    expect(bashWords(s.sky.split("\n")[0] ?? "")).toEqual([
      "sky",
      "launch",
      join(res.home, "deployments", "sgl-v6e-2", "sky.yaml"),
      "-c",
      "sgl-v6e-2",
      "--infra",
      "gcp/us-east5/us-east5-a",
      "-y",
    ]);
    // The second replica is its own cluster, with its own task file.
    expect(res.stdout).toContain(
      `sky launch ${join(res.home, "deployments", "sgl-v6e-2", "sky-r1.yaml")} -c sgl-v6e-2-r1 --infra gcp/us-east5/us-east5-a -y`,
    );

    const rankLines = s.ranks.split("\n").filter((l) => l.startsWith("rank "));
    expect(rankLines).toEqual(["rank 0  <TPU worker 0>"]);
    const commands = s.ranks
      .split("\n")
      .filter((l) => l.startsWith("  "))
      .map((l) => bashWords(l.trim()));
    expect(commands).toHaveLength(1);
    const argv = commands[0] ?? [];
    expect(argv[argv.indexOf("--node-rank") + 1]).toBe("0");
    expect(argv[argv.indexOf("--nnodes") + 1]).toBe("1");
    expect(argv[argv.indexOf("--tp-size") + 1]).toBe("4");
    expect(argv).not.toContain("--dist-init-addr");
    expect(res.stderr).toBe("");
  });

  it("touches nothing: no state directory, no task file", async () => {
    const res = await runCli(["up", "--nodes", "2", "--dry-run"]);
    expect(res.code).toBe(0);
    expect(existsSync(res.home)).toBe(false);
  });

  it("--json: one document {version 1, command up, ok, result {dryRun, plan}}: the plan up executes", async () => {
    const res = await runCli(["up", "--nodes", "2", "--dry-run", "--json"]);
    expect(res.code).toBe(0);
    const doc = oneJson<Ok<DryRun & { dryRun: boolean }>>(res.stdout);
    expect(Object.keys(doc).sort()).toEqual(["command", "ok", "result", "version"]);
    expect(doc).toMatchObject({ version: 1, command: "up", ok: true, result: { dryRun: true } });
    const first = firstLaunch(doc.result);
    expect(doc.result).toMatchObject({ layout: expect.stringMatching(/^2 replicas, each one v6e-4/) });
    expect(first.task).toMatchObject({ name: "sgl-v6e-2", num_nodes: 1, resources: { accelerators: "tpu-v6e-4" } });
    expect(first.skyArgv.slice(0, 2)).toEqual(["sky", "launch"]);
    expect(first.skyArgv.slice(3)).toEqual(["-c", "sgl-v6e-2", "--infra", "gcp/us-east5/us-east5-a", "-y"]);
    expect(first.ranks.map((r) => [r.rank, r.workerId])).toEqual([[0, 0]]);
    expect(doc.result.plan.replicas.map((r) => r.cluster)).toEqual(["sgl-v6e-2", "sgl-v6e-2-r1"]);
    // Every zone of the failover order is in the plan, rendered.
    expect(doc.result.plan.replicas[0]?.launches.map((l) => l.zone)).toEqual(["us-east5-a", "us-east5-b", "us-central1-b", "us-east1-d"]);
    expect(res.stdout.trimEnd().endsWith("}")).toBe(true);
    expect(res.stdout).not.toMatch(/^warning:/m);
  });
});

describe("--json failures are one document too", () => {
  it.each([
    [["up", "--dry-run", "--json", "--tpu", "v7", "--nodes", "3"], "up", "config_invalid", /tpu\.nodes: .*1, 2, 4, 8, 16, 32, 64/],
    [["up", "--dry-run", "--json", "--name", "Bad_Name"], "up", "config_invalid", /name: 'Bad_Name' is not a valid name/],
    [
      ["render", "--json", "--accelerator", "v6e-32", "--nodes", "6"],
      "render",
      "config_invalid",
      /v6e-32 is one slice of 8 hosts.*--replicas/,
    ],
    [["up", "--dry-run", "--json", "--nodes", "2", "--replicas", "3"], "up", "config_invalid", /no v6e slice has 2 hosts.*--replicas/],
    [["up", "--dry-run", "--json", "--accelerator", "v6e-16", "--nodes", "2"], "up", "config_invalid", /v6e-16 is one slice of 4 hosts/],
    [["up", "--dry-run", "--json", "--bogus"], "up", "usage", /unknown option '--bogus'/],
    [["up", "--json", "--tpu", "v8"], "up", "usage", /Allowed choices are v6e, v7/],
    [["up", "--json", "--nodes", "two"], "up", "usage", /--nodes takes a whole number, got 'two'/],
    [["up", "--json", "--env", "NOVALUE"], "up", "usage", /--env takes KEY=VALUE/],
    [["render", "--json", "-c", "missing.yaml"], "render", "usage", /config file missing\.yaml does not exist/],
    [["frobnicate", "--json"], "frobnicate", "usage", /unknown command 'frobnicate'/],
    // Longer than a timer can hold: it would fire after 1 ms and end the run at once.
    [["up", "--json", "--timeout", "30d"], "up", "usage", /--timeout '30d' is too long/],
    [["relaunch", "x", "--json", "--timeout", "30d"], "relaunch", "usage", /--timeout '30d' is too long/],
    [["relaunch", "x", "--json", "--backoff-max", "25d"], "relaunch", "usage", /--backoff-max '25d' is too long/],
    [["watch", "x", "--json", "--interval", "30d"], "watch", "usage", /--interval '30d' is too long/],
    [["watch", "x", "--json", "--interval", "500ms"], "watch", "usage", /--interval '500ms' is shorter than 1s/],
  ])("%j → exit 2, %s %s", async (argv, command, code, message) => {
    const res = await runCli(argv);
    expect(res.code).toBe(2);
    const doc = oneJson<Fail>(res.stdout);
    expectFailure(doc, command, code);
    expect(doc.error.message).toMatch(message);
  });

  it("reports every config problem in one message", async () => {
    const res = await runCli([
      "up",
      "--dry-run",
      "--json",
      "--name",
      "X",
      "--port",
      "80",
      "--zone",
      "nowhere",
      "--server-arg",
      "--nnode=2",
    ]);
    expect(res.code).toBe(2);
    const doc = oneJson<Fail>(res.stdout);
    expect(doc.error.message).toMatch(/^invalid configuration \(4 problems\):/);
    // A bad value from a flag is named by the flag; a rule across keys by the key's path.
    for (const path of ["--name:", "--port:", "--zone:", "server.args:"]) expect(doc.error.message).toContain(`\n  ${path}`);
  });
});

describe("exit codes and messages for people", () => {
  it("a config error exits 2 with every problem on stderr and no stack trace", async () => {
    const res = await runCli(["up", "--dry-run", "--nodes", "6", "--accelerator", "v6e-32", "--name", "Nope"]);
    expect(res.code).toBe(2);
    expect(res.stdout).toBe("");
    expect(res.stderr).toContain("tpu-deploy up: invalid configuration (2 problems):");
    expect(res.stderr).toContain("  tpu.nodes: v6e-32 is one slice of 8 hosts, so --nodes must be 8 (got 6)");
    expect(res.stderr).toContain("  --name: 'Nope' is not a valid name");
    expect(res.stderr).not.toMatch(/\n\s+at /);
  });

  it("--verbose adds the stack trace", async () => {
    const res = await runCli(["up", "--dry-run", "--name", "Nope", "--verbose"]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/\n\s+at /);
  });

  it("--tpu v7 with tpu.accelerator: v6e-16 in the file: exit 2, config_conflict naming both", async () => {
    const files = { "tpu-deploy.yaml": "tpu:\n  accelerator: v6e-16\n" };
    const res = await runCli(["up", "--dry-run", "--tpu", "v7", "--json"], { files });
    expect(res.code).toBe(2);
    const doc = oneJson<Fail>(res.stdout);
    expectFailure(doc, "up", "config_conflict");
    expect(doc.error.message).toContain("--tpu (flags) is v7");
    expect(doc.error.message).toContain("tpu.accelerator (tpu-deploy.yaml) is v6e-16");
  });

  it("--tpu v7 --spot: exit 2 with the reason", async () => {
    const res = await runCli(["up", "--dry-run", "--tpu", "v7", "--spot"]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/tpu\.spot: .*does not support spot/);
    expect(res.stderr).toMatch(/drop --spot or use --tpu v6e/);
  });

  it.each([
    [["up", "--dry-run"], 0],
    [["up", "--dry-run", "--nodes", "8", "--spot"], 0],
    [["up", "--dry-run", "--tpu", "v7", "--nodes", "2"], 0],
    [["render"], 0],
    [["schema"], 0],
    [["up", "--dry-run", "--nodes", "0"], 2],
    [["up", "--dry-run", "--tpu", "v7", "--nodes", "3"], 2],
    [["up", "--dry-run", "--accelerator", "v5e-8"], 2],
    [["up", "--dry-run", "--tp-size", "8", "--nodes", "2"], 2],
    [["up", "--dry-run", "--tp-size", "4", "--nodes", "2"], 0],
    [["up", "--dry-run", "--nodes", "4", "--replicas", "2"], 0],
    [["up", "--dry-run", "--accelerator", "v6e-4", "--nodes", "3"], 0],
    [["up", "--dry-run", "--server-arg=--model=x"], 2],
    [["up", "--dry-run", "--server-arg", "--tensor-parallel-size=8"], 2],
    [["up", "--dry-run", "--port", "30000.5"], 2],
    [["up", "--no-such-flag"], 2],
  ])("%j exits %i", async (argv, code) => {
    expect((await runCli(argv)).code).toBe(code);
  });
});

describe("help and version", () => {
  it.each([
    [["--help"], "Usage: tpu-deploy [options] [command]"],
    [["up", "--help"], "Usage: tpu-deploy up [options]"],
    [["render", "--help"], "Usage: tpu-deploy render [options]"],
    [["schema", "--help"], "Usage: tpu-deploy schema [options]"],
    [["help", "up"], "Usage: tpu-deploy up [options]"],
  ])("%j shows help and exits 0", async (argv, usage) => {
    const res = await runCli(argv);
    expect(res.code).toBe(0);
    expect(res.stdout + res.stderr).toContain(usage);
  });

  it("--help goes to stdout and lists the commands", async () => {
    const res = await runCli(["--help"]);
    expect(res.stderr).toBe("");
    for (const command of ["up", "render", "schema"]) expect(res.stdout).toMatch(new RegExp(`\\n  ${command} `));
  });

  it("up --help documents every flag of the issue", async () => {
    const res = await runCli(["up", "--help"]);
    for (const flag of [
      "-c, --config",
      "-n, --name",
      "--tpu",
      "--accelerator",
      "--nodes",
      "--model",
      "--spot",
      "--no-spot",
      "--zone",
      "--project",
      "--port",
      "--dist-port",
      "--tp-size",
      "--server-arg",
      "--env",
      "--secret",
      "--timeout",
      "--dry-run",
      "--json",
      "-y, --yes",
      "-q, --quiet",
      "-v, --verbose",
    ]) {
      expect(res.stdout).toContain(flag);
    }
  });

  it("render --help documents -o", async () => {
    expect((await runCli(["render", "--help"])).stdout).toContain("-o, --output <file>");
  });

  it.each([["--version"], ["-V"]])("%s prints the package version", async (flag) => {
    const res = await runCli([flag]);
    expect(res.code).toBe(0);
    expect(res.stdout).toBe(`${PACKAGE.version}\n`);
  });
});

describe("render", () => {
  it("writes the sky.yaml to stdout", async () => {
    const res = await runCli(["render", "--nodes", "4"]);
    expect(res.code).toBe(0);
    const task = parse(res.stdout) as { num_nodes: number; resources: { accelerators: string } };
    expect(task.num_nodes).toBe(1);
    expect(task.resources.accelerators).toBe("tpu-v6e-16");
    expect(res.stdout).not.toContain("# ---");
  });

  it("-o FILE writes the file and nothing to stdout", async () => {
    const res = await runCli(["render", "--nodes", "8", "--spot", "-o", "out/sky.yaml"], { files: { "out/.keep": "" } });
    expect(res.code).toBe(0);
    expect(res.stdout).toBe("");
    const task = parse(readFileSync(join(res.cwd, "out", "sky.yaml"), "utf8")) as { resources: Record<string, unknown> };
    expect(task.resources).toMatchObject({ accelerators: "tpu-v6e-32", use_spot: true });
  });

  it("-o FILE --json reports where it wrote", async () => {
    const res = await runCli(["render", "-o", "sky.yaml", "--json"]);
    const doc = oneJson<Ok<{ path: string; task: { name: string } }>>(res.stdout);
    expect(doc).toMatchObject({
      version: 1,
      command: "render",
      ok: true,
      result: { path: join(res.cwd, "sky.yaml"), task: { name: "sgl-v6e-1" } },
    });
    expect(parse(readFileSync(join(res.cwd, "sky.yaml"), "utf8"))).toEqual(doc.result.task);
  });

  it("prints the same task as up --dry-run", async () => {
    // One installation (one TPU_DEPLOY_HOME): the owner label is the same in both.
    const env = { TPU_DEPLOY_HOME: join(makeTempDir("tpu-deploy-home-"), "state") };
    const render = await runCli(["render", "--nodes", "2", "--json"], { env });
    const up = await runCli(["up", "--nodes", "2", "--dry-run", "--json"], { env });
    expect(oneJson<Ok<{ task: unknown }>>(render.stdout).result.task).toEqual(firstLaunch(oneJson<Ok<DryRun>>(up.stdout).result).task);
  });
});

describe("the config file", () => {
  const FILE = "name: from-file\ntpu:\n  nodes: 4\n  spot: true\n  zones: [us-central1-b]\nmodel:\n  path: Qwen/Qwen3-32B\n";

  it("is found as tpu-deploy.yaml in the cwd", async () => {
    const res = await runCli(["up", "--dry-run", "--json"], { files: { "tpu-deploy.yaml": FILE } });
    expect(res.code).toBe(0);
    const r = firstLaunch(oneJson<Ok<DryRun>>(res.stdout).result);
    expect(r.task).toMatchObject({
      name: "from-file",
      resources: { accelerators: "tpu-v6e-16", use_spot: true, infra: "gcp/us-central1/us-central1-b" },
    });
    expect(r.skyArgv).toContain("--use-spot");
    expect(r.ranks).toHaveLength(4);
    expect(r.ranks[0]?.argv).toContain("Qwen/Qwen3-32B");
  });

  it("is read from -c FILE (relative to the cwd), and flags override it key by key", async () => {
    const res = await runCli(["up", "--dry-run", "--json", "-c", "conf/prod.yaml", "--no-spot", "--name", "from-flag"], {
      files: { "conf/prod.yaml": FILE },
    });
    expect(res.code).toBe(0);
    const r = firstLaunch(oneJson<Ok<DryRun>>(res.stdout).result);
    expect(r.task).toMatchObject({ name: "from-flag", resources: { accelerators: "tpu-v6e-16", use_spot: false } });
    expect(r.skyArgv).not.toContain("--use-spot");
  });

  it("-c with a missing file exits 2", async () => {
    const res = await runCli(["up", "--dry-run", "-c", "nope.yaml"]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain("config file nope.yaml does not exist");
    expect(res.stderr).toContain("hint: check the path given to -c/--config");
  });

  it("a file that is not YAML exits 2", async () => {
    const res = await runCli(["up", "--dry-run", "--json"], { files: { "tpu-deploy.yaml": "tpu: [unclosed\n" } });
    expect(res.code).toBe(2);
    expectFailure(oneJson<Fail>(res.stdout), "up", "config_invalid");
  });

  it("an alias bomb (billion laughs) exits 2 naming the file, without expanding it", async () => {
    // Each level refers to the one above ten times: expanded, the last would be 10^8 strings.
    const names = [..."abcdefgh"];
    const levels = names.map(
      (n, i) =>
        `${n}: &${n} [${Array(10)
          .fill(i === 0 ? "lol" : `*${names[i - 1]}`)
          .join(", ")}]`,
    );
    for (const extra of [[], ["--json"]]) {
      const res = await runCli(["render", ...extra], { files: { "tpu-deploy.yaml": `${levels.join("\n")}\n` } });
      expect(res.code).toBe(2);
      const message = extra.length > 0 ? oneJson<Fail>(res.stdout).error.message : res.stderr;
      if (extra.length > 0) expectFailure(oneJson<Fail>(res.stdout), "render", "config_invalid");
      expect(message).toContain("tpu-deploy.yaml");
      expect(message).toMatch(/alias/i);
      expect(res.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it("a file that refers to an anchor a few times is read as usual", async () => {
    const res = await runCli(["render", "--json"], { files: { "tpu-deploy.yaml": "name: &n qwen\nserver:\n  env: {SERVED_AS: *n}\n" } });
    expect(res.code).toBe(0);
    expect(oneJson<Ok<{ task: { name: string } }>>(res.stdout).result.task.name).toBe("qwen");
  });

  it("an unknown key in the file exits 2 naming its path and the file", async () => {
    const res = await runCli(["render"], { files: { "tpu-deploy.yaml": "tpu:\n  node: 4\n" } });
    expect(res.code).toBe(2);
    expect(res.stderr).toContain("tpu.node: unknown key (tpu-deploy.yaml)");
  });
});

describe("secrets never leave as values", () => {
  it("dry run, human and --json: names only, even with the values in the environment", async () => {
    const env = { HF_TOKEN: "hf_LEAKED_IF_SEEN_123", SGLANG_API_KEY: "sk-LEAKED-IF-SEEN" };
    for (const extra of [[], ["--json"]]) {
      const res = await runCli(["up", "--dry-run", "--secret", "HF_TOKEN", "--api-key-secret", "SGLANG_API_KEY", ...extra], { env });
      expect(res.code).toBe(0);
      for (const value of Object.values(env)) {
        expect(res.stdout).not.toContain(value);
        expect(res.stderr).not.toContain(value);
      }
      expect(res.stdout).toContain("HF_TOKEN");
    }
  });
});

describe("schema", () => {
  const COMMITTED = join(import.meta.dirname, "..", "__snapshots__", "tpu-deploy.schema.json");

  it("prints the committed JSON Schema of tpu-deploy.yaml", async () => {
    const res = await runCli(["schema"]);
    expect(res.code).toBe(0);
    await expect(res.stdout).toMatchFileSnapshot("../__snapshots__/tpu-deploy.schema.json");
  });

  it("--json wraps it in the versioned document", async () => {
    const doc = oneJson<Ok<unknown>>((await runCli(["schema", "--json"])).stdout);
    expect(doc).toEqual({ version: 1, command: "schema", ok: true, result: JSON.parse(readFileSync(COMMITTED, "utf8")) });
  });
});
