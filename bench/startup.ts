// CLI start-up (issue 12, item 4): wall time of `tpu-deploy --help` and of `tpu-deploy up --nodes 2 --dry-run`
// against `node -e 0`, interleaved in the same run so that the machine's load hits all three alike.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { repoRoot } from "../test/sim/sim.js";
import type { Results } from "./results.js";
import { fmtMs } from "./stats.js";

export function startup(results: Results, iterations: number, enforce: boolean): void {
  const bin = join(repoRoot(), "bin", "tpu-deploy.js");
  // A directory with no tpu-deploy.yaml, a state home of its own: the dry run touches nothing anyway.
  const dir = mkdtempSync(join(tmpdir(), "tpd-bench-startup-"));
  const env = { ...process.env, HOME: dir, TPU_DEPLOY_HOME: join(dir, ".tpu-deploy"), GOOGLE_CLOUD_PROJECT: "bench-project" };
  const cases = {
    node: [process.execPath, "-e", "0"],
    help: [process.execPath, bin, "--help"],
    dryRun: [process.execPath, bin, "up", "--nodes", "2", "--dry-run"],
  };
  const times: Record<keyof typeof cases, number[]> = { node: [], help: [], dryRun: [] };
  try {
    for (let i = -1; i < iterations; i++) {
      for (const [k, argv] of Object.entries(cases) as [keyof typeof cases, string[]][]) {
        const [cmd = "", ...args] = argv;
        const t0 = performance.now();
        const r = spawnSync(cmd, args, { env, cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
        const ms = performance.now() - t0;
        if (r.status !== 0) throw new Error(`${argv.slice(1).join(" ")} exited ${r.status}: ${r.stderr.toString()}`);
        if (i >= 0) times[k].push(ms); // the first round only warms the page cache
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const node = results.add("startup.node", "ms", times.node, "`node -e 0`, spawned and waited for");
  const help = results.add("startup.help", "ms", times.help, "`tpu-deploy --help`");
  const dry = results.add("startup.dryRun", "ms", times.dryRun, "`tpu-deploy up --nodes 2 --dry-run` (no config file)");
  const tag = enforce ? "" : " (smoke: not enforced)";
  const base = node.summary.median;
  results.target(
    `--help at most 2.5× node -e 0 (median)${tag}`,
    help.summary.median <= 2.5 * base,
    `${fmtMs(help.summary.median)} vs ${fmtMs(base)} (${(help.summary.median / base).toFixed(2)}×)`,
  );
  results.target(
    `up --nodes 2 --dry-run at most 4× node -e 0 (median)${tag}`,
    dry.summary.median <= 4 * base,
    `${fmtMs(dry.summary.median)} vs ${fmtMs(base)} (${(dry.summary.median / base).toFixed(2)}×)`,
  );
}
