// `npm run demo` as a user who is not root, on this machine: it stops within seconds, before any host
// is made, with exit 2 and one message naming what is missing (root) and what to do.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../sim/sim.js";

describe("npm run demo without root", () => {
  it("exits 2 within seconds, naming root and how to run it", () => {
    const demo = join(repoRoot(), "dist", "test", "sim", "demo.js");
    expect(existsSync(demo), "npm run build first (npm test does)").toBe(true);
    const t0 = Date.now();
    const r = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, demo], {
      encoding: "utf8",
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/nonexistent" },
      timeout: 60_000,
    });
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain("npm run demo needs what this machine lacks for the simulated cloud:");
    expect(r.stderr).toContain("  root: the simulated TPU hosts are network namespaces running sshd");
    expect(r.stderr).toContain("run it as root: sudo npm run demo");
    // Nothing was started: no sim root of this run.
    expect(r.stdout).not.toContain("starting the simulated cloud");
  });
});
