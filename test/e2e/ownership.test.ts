// Two installations of tpu-deploy (two TPU_DEPLOY_HOMEs, as two machines) sharing one SkyPilot identity on
// the simulated cloud: each cluster carries its launcher's owner label, and the other installation neither
// takes it over with `up`, nor stops, restarts, relaunches, tears down or collects it — unless --force.
import { cpSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliResult, type E2E, startE2E } from "./helpers.js";

let e: E2E;
let homeB: string;
const asB = () => ({ env: { TPU_DEPLOY_HOME: homeB } });

beforeAll(async () => {
  e = await startE2E();
  homeB = join(e.sim.home, ".tpu-deploy-b");
  mkdirSync(homeB, { recursive: true });
});
afterAll(async () => {
  await e?.stop();
});

function errorOf(r: CliResult): { code: string; message: string; hint?: string } {
  return (r.json as { error: { code: string; message: string; hint?: string } }).error;
}

describe("ownership between installations", () => {
  it("B refuses A's cluster everywhere until --force, and gc on B leaves it alone", async () => {
    const a = await e.cli(["up", "-n", "shared", "--nodes", "1", "--json"]);
    expect(a.code, a.stderr).toBe(0);
    const idA = readFileSync(join(e.stateHome, "installation-id"), "utf8").trim();
    expect(idA).toMatch(/^[a-f0-9]{16}$/);
    const cluster = (await e.sim.state()).clusters.shared;
    expect(cluster?.labels).toMatchObject({ "tpu-deploy-owner": idA, "managed-by": "tpu-deploy" });

    // B's up of the same name would reuse A's cluster: refused, nothing launched.
    const before = (await e.sim.skyCalls()).length;
    const up = await e.cli(["up", "-n", "shared", "--nodes", "1", "--json"], asB());
    expect(up.code).toBe(1);
    expect(errorOf(up)).toMatchObject({ code: "not_owner", message: expect.stringContaining(`installation ${idA}`) });
    expect(errorOf(up).hint).toMatch(/--force/);
    expect((await e.sim.skyCalls()).slice(before).filter((c) => c.argv[0] === "launch")).toEqual([]);

    // gc on B: the cluster has no state there, but it is A's: listed as skipped, never removed.
    const gc = await e.cli(["gc", "-y", "--json"], asB());
    expect(gc.code, gc.stdout).toBe(0);
    const doc = (gc.json as { result: { found: { name: string }[]; skipped: { name: string; why: string }[] } }).result;
    expect(doc.found.map((i) => i.name)).not.toContain("shared");
    expect(doc.skipped).toContainEqual(expect.objectContaining({ name: "shared", why: expect.stringContaining(idA) }));
    expect((await e.sim.state()).clusters.shared).toBeDefined();

    // B with a copy of A's state (two machines, one deployment): restart, relaunch and down are refused.
    cpSync(join(e.stateHome, "deployments", "shared"), join(homeB, "deployments", "shared"), { recursive: true });
    const pgid = e.replica("shared").hosts[0]?.pgid;
    for (const argv of [
      ["restart", "shared", "--json"],
      ["down", "shared", "-y", "--json"],
    ]) {
      const r = await e.cli(argv, asB());
      expect(r.code, `${argv.join(" ")}: ${r.stdout}`).toBe(1);
      expect(errorOf(r).code).toBe("not_owner");
    }
    expect((await e.sim.state()).clusters.shared?.status).toBe("UP");
    expect(e.replica("shared").hosts[0]?.pgid).toBe(pgid); // A's server untouched

    // --force takes it down from B.
    const forced = await e.cli(["down", "shared", "-y", "--force"], asB());
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toMatch(/--force: acting on shared \(installation [a-f0-9]{16}\)/);
    expect((await e.sim.state()).clusters.shared).toBeUndefined();
    // A finds it gone and says so.
    const downA = await e.cli(["down", "shared", "-y"]);
    expect(downA.code).toBe(0);
  });

  it("relaunch on B holds (exit 1, not a failed attempt) when A's servers died; A's own relaunch restarts them", async () => {
    const a = await e.cli(["up", "-n", "spotshared", "--nodes", "1", "--spot"]);
    expect(a.code, a.stderr).toBe(0);
    cpSync(join(e.stateHome, "deployments", "spotshared"), join(homeB, "deployments", "spotshared"), { recursive: true });
    // The servers died on live hosts: relaunch would restart them. On B it must not.
    const host = Object.values((await e.sim.state()).hosts).find((h) => h.alive && h.cluster === "spotshared");
    const killed = await e.sim.execOnHost(host?.id ?? "", `/bin/kill -KILL -- -${e.replica("spotshared").hosts[0]?.pgid}`);
    expect(killed.code, killed.stderr).toBe(0);
    const r = await e.cli(["relaunch", "spotshared", "--json"], asB());
    expect(r.code, r.stdout).toBe(1);
    const rep = (r.json as { error: { action: string; code: string; attempt: number } }).error;
    expect(rep).toMatchObject({ action: "hold", attempt: 0 });
    expect((await e.cli(["relaunch", "spotshared", "--json"])).code).toBe(0); // A restarts its own
    expect((await e.cli(["down", "spotshared", "-y"])).code).toBe(0);
  });
});
