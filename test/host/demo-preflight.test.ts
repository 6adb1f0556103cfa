// `npm run demo` as a user who is not root, on this machine: it stops within seconds, before any host
// is made, with exit 2 and one message naming what is missing (root) and what to do.
import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot } from "../sim/sim.js";

// The checkout may sit where another user cannot read it (a 0700 temp dir in CI): run a copy of the
// built demo from a world-readable directory instead.
const copy = mkdtempSync(join(tmpdir(), "tpd-demo-"));
afterAll(() => rmSync(copy, { recursive: true, force: true }));

describe("npm run demo without root", () => {
  it("exits 2 within seconds, naming root and how to run it", () => {
    const built = join(repoRoot(), "dist", "test", "sim");
    expect(existsSync(join(built, "demo.js")), "npm run build first (npm test does)").toBe(true);
    cpSync(built, join(copy, "dist", "test", "sim"), { recursive: true });
    chmodSync(copy, 0o755);
    const demo = join(copy, "dist", "test", "sim", "demo.js");
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
