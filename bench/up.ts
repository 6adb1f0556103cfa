// Benchmark: wall time of each phase of `tpu-deploy up` on the simulated cloud, for 16 and 64 hosts
// (v6e-64 and v6e-256), plus how fast the sim itself starts hosts. Needs root. Run: npm run bench
// Not part of the timed test suite.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { ensureSimPrerequisites, PreflightError } from "../test/sim/preflight.js";
import { repoRoot, startSim } from "../test/sim/sim.js";

const bin = join(repoRoot(), "bin", "tpu-deploy.js");
const sizes = (process.argv[2] ?? "16,64").split(",").map(Number);

try {
  ensureSimPrerequisites({ command: "npm run bench" });
} catch (err) {
  if (!(err instanceof PreflightError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
}
const sim = await startSim();
const env = { ...sim.env, TPU_DEPLOY_HOME: join(sim.home, ".tpu-deploy") };
try {
  for (const nodes of sizes) {
    const name = `bench-${nodes}`;
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [bin, "up", "-n", name, "--nodes", String(nodes), "--json", "-q"], { env, encoding: "utf8" });
    const wall = Date.now() - t0;
    if (r.status !== 0) {
      process.stderr.write(r.stdout + r.stderr);
      process.exitCode = 1;
      break;
    }
    const t = (JSON.parse(r.stdout) as { result: { timings: Record<string, number> } }).result.timings;
    const launch = t.launchMs ?? 0;
    const ready = t.readyMs ?? 0;
    const total = t.totalMs ?? wall;
    process.stdout.write(
      `${nodes} hosts: total ${total} ms = launch (fake sky provisioning + setup) ${launch} ms + discovery/ports ${total - launch - ready} ms + start→serving ${ready} ms\n`,
    );
    const d0 = Date.now();
    spawnSync(process.execPath, [bin, "down", name, "-y", "-q"], { env });
    process.stdout.write(`${nodes} hosts: down (stop servers, sky down, verify) ${Date.now() - d0} ms\n`);
  }
} finally {
  await sim.stop();
}
