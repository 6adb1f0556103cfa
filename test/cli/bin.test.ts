// One real spawn of the built CLI: bin/ runs only compiled JS from dist/.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { firstLaunch, type PlanDoc } from "../helpers/run-cli.js";
import { StateStore } from "../../src/adapters/state-store.js";
import { flagName, flagsToConfig } from "../../src/cli/config-flags.js";
import { resolveConfig, specOf } from "../../src/core/config.js";
import { shellJoin } from "../../src/core/quote.js";
import { newState } from "../../src/core/state.js";

const ROOT = join(import.meta.dirname, "..", "..");
const BIN = join(ROOT, "bin", "tpu-deploy.js");
const MAIN_JS = join(ROOT, "dist", "src", "main.js");

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(path) : statSync(path).mtimeMs);
  }
  return newest;
}

function distIsCurrent(): boolean {
  try {
    return statSync(MAIN_JS).mtimeMs >= newestMtime(join(ROOT, "src"));
  } catch {
    return false;
  }
}

// Prints, at exit, which heavy CommonJS packages the process loaded. ssh2, google-gax and
// @google-cloud/tpu are CommonJS, so even an ESM `import` of them lands in require.cache.
const PRELOAD = `
import { createRequire } from "node:module";
import { writeSync } from "node:fs";
const require = createRequire(import.meta.url);
const HEAVY = new Set(["ssh2", "google-gax", "@google-cloud/tpu", "@grpc/grpc-js"]);
process.on("exit", () => {
  const names = Object.keys(require.cache).map((p) => /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(p)?.[1]);
  const heavy = [...new Set(names.filter((n) => HEAVY.has(n)))].sort();
  writeSync(2, "\\nHEAVY-MODULES " + JSON.stringify(heavy) + "\\n");
});
`;

// ESM packages never reach require.cache: a resolve hook (module.register) names each package an ESM
// import reached, on stderr, from the loader's own thread.
const ESM_HOOKS = `
import { writeSync } from "node:fs";
const seen = new Set();
export async function resolve(spec, ctx, next) {
  const r = await next(spec, ctx);
  const m = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(r.url);
  if (m && !seen.has(m[1])) { seen.add(m[1]); writeSync(2, "ESM-PACKAGE " + m[1] + "\\n"); }
  return r;
}
`;

function esmPackages(stderr: string): string[] {
  return stderr
    .split("\n")
    .filter((l) => l.startsWith("ESM-PACKAGE "))
    .map((l) => l.slice("ESM-PACKAGE ".length))
    .sort();
}

function heavyModules(stderr: string): string[] {
  const line = stderr.split("\n").find((l) => l.startsWith("HEAVY-MODULES "));
  if (!line) throw new Error(`no HEAVY-MODULES line in stderr:\n${stderr}`);
  return JSON.parse(line.slice("HEAVY-MODULES ".length)) as string[];
}

let preloadPath = "";
let env: NodeJS.ProcessEnv = {};
let cwd = "";

beforeAll(() => {
  // Build when dist/ is missing or older than src/, so the spawn tests this tree's code.
  // tsc emits even when someone else's file has a type error; what matters is that main.js exists.
  if (!distIsCurrent()) {
    spawnSync("npx", ["tsc", "-p", "tsconfig.json"], { cwd: ROOT, stdio: "ignore" });
  }
  expect(statSync(MAIN_JS).isFile()).toBe(true);
  const dir = mkdtempSync(join(tmpdir(), "tpu-deploy-bin-"));
  preloadPath = join(dir, "heavy-modules.mjs");
  writeFileSync(join(dir, "esm-hooks.mjs"), ESM_HOOKS);
  writeFileSync(
    preloadPath,
    `${PRELOAD}\nimport { register } from "node:module";\nregister(${JSON.stringify(pathToFileURL(join(dir, "esm-hooks.mjs")).href)});\n`,
  );
  cwd = mkdtempSync(join(tmpdir(), "tpu-deploy-bin-cwd-"));
  env = { PATH: process.env.PATH, HOME: dir, TPU_DEPLOY_HOME: join(dir, "state") };
}, 120_000);

describe("bin/tpu-deploy.js", () => {
  it("up --nodes 2 --dry-run --json: exit 0, one JSON document with two replicas of one rank", () => {
    const res = spawnSync(process.execPath, [BIN, "up", "--nodes", "2", "--dry-run", "--json"], { cwd, env, encoding: "utf8" });
    expect(res.status).toBe(0);
    const doc = JSON.parse(res.stdout) as {
      version: number;
      command: string;
      ok: boolean;
      result: PlanDoc;
    };
    expect(doc).toMatchObject({ version: 1, command: "up", ok: true });
    const first = firstLaunch(doc.result);
    expect(first.skyArgv).toEqual([
      "sky",
      "launch",
      join(env.TPU_DEPLOY_HOME ?? "", "deployments", "sgl-v6e-2", "sky.yaml"),
      "-c",
      "sgl-v6e-2",
      "--infra",
      "gcp/us-east5/us-east5-a",
      "-y",
    ]);
    expect(first.ranks.map((r) => r.rank)).toEqual([0]);
    expect(doc.result.plan.replicas.map((r) => r.cluster)).toEqual(["sgl-v6e-2", "sgl-v6e-2-r1"]);
  });

  it("sets the exit code: a config error exits 2 without a stack trace", () => {
    const res = spawnSync(process.execPath, [BIN, "up", "--dry-run", "--tpu", "v7", "--nodes", "3"], { cwd, env, encoding: "utf8" });
    expect(res.status).toBe(2);
    expect(res.stderr).toContain("tpu.nodes:");
    expect(res.stderr).not.toMatch(/\n\s+at /);
  });

  it("--help returns quickly and loads neither ssh2 nor the Google clients", () => {
    const started = performance.now();
    const res = spawnSync(process.execPath, ["--import", preloadPath, BIN, "--help"], { cwd, env, encoding: "utf8" });
    const elapsed = performance.now() - started;
    expect(res.status).toBe(0);
    expect(res.stdout).toContain("Usage: tpu-deploy");
    expect(heavyModules(res.stderr)).toEqual([]);
    // Not zod either: the schemas load when a command runs (main.ts builds the dependencies then).
    expect(esmPackages(res.stderr)).toEqual(["commander"]);
    expect(elapsed).toBeLessThan(1500);

    for (const command of ["up", "render"]) {
      const sub = spawnSync(process.execPath, ["--import", preloadPath, BIN, command, "--help"], { cwd, env, encoding: "utf8" });
      expect(sub.status).toBe(0);
      expect(heavyModules(sub.stderr)).toEqual([]);
    }
  });

  it("the dry run does not load them either", () => {
    const res = spawnSync(process.execPath, ["--import", preloadPath, BIN, "up", "--nodes", "2", "--dry-run"], {
      cwd,
      env,
      encoding: "utf8",
    });
    expect(res.status).toBe(0);
    expect(heavyModules(res.stderr)).toEqual([]);
  });

  it("schedule, run through a symlink as a global install's bin is, writes the real bin and this node into the line", () => {
    const r = resolveConfig([{ label: "flags", keyName: flagName, data: flagsToConfig({ name: "linked", nodes: 1 }) }], env);
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    new StateStore(env).write(newState(r.config, specOf(r.config)));
    const link = join(mkdtempSync(join(tmpdir(), "tpu-deploy-bin-link-")), "tpu-deploy");
    symlinkSync(BIN, link);
    const res = spawnSync(process.execPath, [link, "schedule", "linked", "--every", "5m", "--json"], { cwd, env, encoding: "utf8" });
    expect(res.status).toBe(0);
    const { command } = (JSON.parse(res.stdout) as { result: { command: string } }).result;
    expect(command).toContain(` ${shellJoin([process.execPath, BIN, "relaunch", "linked"])};`);
  });

  it("the check itself sees ssh2 and google-gax when they are imported", () => {
    const res = spawnSync(
      process.execPath,
      ["--import", preloadPath, "--input-type=module", "-e", 'await import("ssh2"); await import("@google-cloud/tpu");'],
      { cwd: ROOT, env, encoding: "utf8" },
    );
    expect(res.status).toBe(0);
    expect(heavyModules(res.stderr)).toEqual(expect.arrayContaining(["@google-cloud/tpu", "google-gax", "ssh2"]));
  });
});
