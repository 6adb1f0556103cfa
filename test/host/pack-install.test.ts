// Installable the way people install CLIs: `npm pack`, then `npm install -g <tarball>` into a temporary
// prefix, and the installed `tpu-deploy` runs --help, --version and the dry run of the main job with only
// its runtime dependencies (no TypeScript, no vitest).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot } from "../sim/sim.js";

const work = mkdtempSync(join(tmpdir(), "tpd-pack-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function npm(args: string[], cwd: string): string {
  return execFileSync("npm", args, { cwd, encoding: "utf8", env: { ...process.env, npm_config_loglevel: "error" }, timeout: 300_000 });
}

describe("npm pack, then npm install -g of the tarball", () => {
  it("gives a working tpu-deploy: --help, --version, up --nodes 2 --dry-run", { timeout: 360_000 }, () => {
    // --ignore-scripts: pack the dist/ that npm test just built; prepare would rebuild it while the e2e
    // project runs from it. (npm pack of a clean checkout builds through prepare.)
    const packed = JSON.parse(npm(["pack", "--json", "--ignore-scripts", "--pack-destination", work], repoRoot())) as {
      filename: string;
      files: { path: string }[];
    }[];
    const files = packed[0]?.files.map((f) => f.path) ?? [];
    expect(files).toContain("bin/tpu-deploy.js");
    expect(files).toContain("dist/src/main.js");
    expect(files).toContain("templates/v6e.sky.yaml");
    expect(files.filter((f) => f.startsWith("dist/test") || f.startsWith("test/") || f.startsWith("src/"))).toEqual([]);

    const prefix = join(work, "prefix");
    npm(["install", "-g", "--prefix", prefix, "--no-audit", "--no-fund", "--prefer-offline", join(work, packed[0]?.filename ?? "")], work);
    const bin = join(prefix, "bin", "tpu-deploy");
    expect(existsSync(bin)).toBe(true);
    const installed = join(prefix, "lib", "node_modules", "tpu-deploy");
    const deps = readdirSync(join(installed, "node_modules"));
    expect(deps).toContain("commander");
    expect(deps).not.toContain("typescript");
    expect(deps).not.toContain("vitest");

    const env = { PATH: `${join(prefix, "bin")}:/usr/local/bin:/usr/bin:/bin`, HOME: work };
    const run = (args: string[]) => spawnSync("tpu-deploy", args, { cwd: work, env, encoding: "utf8", timeout: 60_000 });
    const help = run(["--help"]);
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toContain("Usage: tpu-deploy");
    const version = run(["--version"]);
    expect(version.stdout.trim()).toBe((JSON.parse(readFileSync(join(repoRoot(), "package.json"), "utf8")) as { version: string }).version);
    const dry = run(["up", "--nodes", "2", "--dry-run", "--json"]);
    expect(dry.status, dry.stderr).toBe(0);
    const doc = JSON.parse(dry.stdout) as { ok: boolean; result: { plan: { replicas: { launches: { skyArgv: string[] }[] }[] } } };
    expect(doc.ok).toBe(true);
    expect(doc.result.plan.replicas[0]?.launches[0]?.skyArgv[0]).toBe("launch");
  });
});
