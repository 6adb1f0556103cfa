// doctor, logs -f and down --all on the simulated cloud.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type E2E, startE2E } from "./helpers.js";

let e2e: E2E;
beforeAll(async () => {
  e2e = await startE2E();
});
afterAll(async () => {
  await e2e?.stop();
});

interface Doctor {
  ok: boolean;
  checks: { check: string; ok: boolean; detail: string }[];
}

describe("operations", () => {
  it("doctor: sky answers, the accelerator is offered per zone (catalog and TPU API), secrets, state dir", async () => {
    const good = await e2e.cli(["doctor", "--nodes", "4", "--zone", "us-east5-a", "--json"]);
    expect(good.code, good.stderr).toBe(0);
    const g = (good.json as { result: Doctor }).result;
    expect(g.ok).toBe(true);
    expect(g.checks.map((c) => c.check)).toEqual(["sky", "v6e-16 in us-east5-a", "secrets", "state directory"]);
    expect(g.checks[1]?.detail).toMatch(/Cloud TPU API offers it/);

    const bad = await e2e.cli(["doctor", "--nodes", "4", "--zone", "europe-north1-a", "--secret", "HF_TOKEN", "--json"]);
    expect(bad.code).toBe(1);
    const b = (bad.json as { ok: boolean; error: Doctor & { code: string } }).error;
    expect(b.code).toBe("checks_failed");
    const byName = Object.fromEntries(b.checks.map((c) => [c.check, c]));
    expect(byName["v6e-16 in europe-north1-a"]).toMatchObject({ ok: false });
    expect(byName["v6e-16 in europe-north1-a"]?.detail).toMatch(/not in SkyPilot's catalog/);
    expect(byName.secrets).toMatchObject({ ok: false });
    expect(byName.secrets?.detail).toMatch(/HF_TOKEN/);
    expect(byName.sky).toMatchObject({ ok: true });

    const noSky = await e2e.cli(["doctor", "--nodes", "1", "--json"], { env: { TPU_DEPLOY_SKY: "/nonexistent/sky" } });
    expect(noSky.code).toBe(1);
    const n = (noSky.json as { error: Doctor }).error;
    expect(n.checks[0]).toMatchObject({ check: "sky", ok: false });
  });

  it("logs -f follows new lines with replica and rank prefixes until interrupted; down --all takes every replica down", async () => {
    for (const name of ["fa", "fb"]) {
      const r = await e2e.cli(["up", "-n", name, "--nodes", "2"]);
      expect(r.code, r.stderr).toBe(0);
    }
    const ac = new AbortController();
    let seen = "";
    const follow = e2e.cli(["logs", "fa", "-f", "--tail", "5"], { signal: ac.signal, onStdout: (t) => (seen = t) });
    const until = async (re: RegExp) => {
      const t0 = Date.now();
      while (!re.test(seen) && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 100));
      expect(seen).toMatch(re);
    };
    await until(/^\[replica 0 rank 0\] /m);
    await until(/^\[replica 1 rank 0\] /m);
    // A new line on replica 1's host (cluster fa-r1) shows up while following.
    const host = Object.values((await e2e.sim.state()).hosts).find((h) => h.cluster === "fa-r1" && h.alive);
    expect(host?.internalIp).toBe(e2e.replica("fa", 1).hosts[0]?.internalIp);
    await e2e.sim.execOnHost(host?.id ?? "", "echo 'marker line from the test' >> /home/gcpuser/.tpu-deploy/fa/server.log");
    await until(/^\[replica 1 rank 0\] marker line from the test$/m);
    ac.abort();
    expect((await follow).code).toBe(0);

    const down = await e2e.cli(["down", "--all", "-y", "--json"]);
    expect(down.code, down.stderr).toBe(0);
    const results = (down.json as { result: { name: string; verified: boolean }[] }).result;
    expect(results.map((r) => [r.name, r.verified])).toEqual([
      ["fa", true],
      ["fb", true],
    ]);
    const s = await e2e.sim.state();
    expect(Object.keys(s.clusters)).toEqual([]);
    expect(Object.values(s.hosts).filter((h) => h.alive)).toEqual([]);
  });

  it("sky down fails as GCP teardown does (exit 0, the cluster still listed): down says not verified, keeps the state, and succeeds once it can", async () => {
    expect((await e2e.cli(["up", "-n", "stubborn", "--nodes", "1"])).code).toBe(0);
    await e2e.sim.setFaults({ sky: { downFail: { clusters: ["stubborn"] } } });
    const r = await e2e.cli(["down", "stubborn", "-y", "--json"]);
    expect(r.code, r.stdout).toBe(1);
    const err = (r.json as { error: { code: string; message: string } }).error;
    expect(err.code).toBe("not_verified");
    expect(err.message).toContain("stubborn");
    expect(e2e.state("stubborn")).toBeDefined(); // the slice may still bill: its record stays
    expect((await e2e.sim.state()).clusters.stubborn).toBeDefined();
    await e2e.sim.setFaults({});
    const again = await e2e.cli(["down", "stubborn", "-y"]);
    expect(again.code, again.stderr).toBe(0);
    expect(e2e.state("stubborn")).toBeUndefined();
    expect((await e2e.sim.state()).clusters.stubborn).toBeUndefined();
  });

  it("the Cloud TPU API cannot be reached after sky down: not_verified naming what was and was not checked, state kept; the next down verifies", async () => {
    expect((await e2e.cli(["up", "-n", "blind", "--nodes", "1"])).code).toBe(0);
    // Nothing listens on port 1: the API is unreachable, as from a machine whose network or credentials broke.
    const r = await e2e.cli(["down", "blind", "-y", "--json"], { env: { TPU_EMULATOR_HOST: "127.0.0.1:1" } });
    expect(r.code, r.stdout).toBe(1);
    const err = (r.json as { error: { code: string; message: string } }).error;
    expect(err.code).toBe("not_verified");
    expect(err.message).toMatch(/blind: sky down ran, but not everything could be checked; the state is kept/);
    expect(err.message).toMatch(/checked: gone from sky status/);
    expect(err.message).toMatch(/not checked: the Cloud TPU API: /);
    expect(e2e.state("blind")).toBeDefined();
    const again = await e2e.cli(["down", "blind", "-y"]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(
      /blind was already gone \(gone from sky status; no TPU node left in the Cloud TPU API \(us-[a-z0-9-]+\)\); state removed/,
    );
    expect(e2e.state("blind")).toBeUndefined();
  });

  it("destructive commands refuse to run without -y when there is no terminal", async () => {
    const r = await e2e.cli(["down", "ghost"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/-y/);
  });
});
