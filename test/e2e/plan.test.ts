// One plan: what `up --dry-run --json` prints is what `up` then does. The sky argv the fake sky received,
// the task file it read, and each server's argv as its process has it (/proc/PID/cmdline on the host) are
// compared with the printed plan, rank 0's address filled in.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type E2E, startE2E } from "./helpers.js";

let e: E2E;

beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

interface PlanJson {
  replicas: {
    cluster: string;
    taskPath: string;
    launches: { zone: string; taskYaml: string; skyArgv: string[] }[];
    ranks: { rank: number; workerId: number; argv: string[] }[];
  }[];
}

describe("the dry run is the plan up executes", () => {
  it("--nodes 4 (one v6e-16): sky argv, task file and every rank's server argv are the printed plan", async () => {
    const args = ["up", "-n", "planned", "--nodes", "4", "--model", "Qwen/Qwen3-4B", "--server-arg=--page-size=64"];
    const dry = await e.cli([...args, "--dry-run", "--json"]);
    expect(dry.code, dry.stderr).toBe(0);
    const plan = (dry.json as { result: { plan: PlanJson } }).result.plan;
    const replica = plan.replicas[0];
    const first = replica?.launches[0];
    if (!replica || !first) throw new Error("no launch in the plan");

    const before = (await e.sim.skyCalls()).length;
    const up = await e.cli(args);
    expect(up.code, up.stderr).toBe(0);

    // The first zone's launch is exactly the planned argv, on the planned task file, holding the planned text.
    const launches = (await e.sim.skyCalls()).slice(before).filter((c) => c.argv[0] === "launch");
    expect(launches.map((c) => c.argv)).toEqual([first.skyArgv]);
    expect(readFileSync(replica.taskPath, "utf8")).toBe(first.taskYaml);

    // Every rank runs the planned argv, with rank 0's internal IPv4 where the plan had its placeholder.
    const rec = e.replica("planned");
    const rank0Ip = rec.hosts.find((h) => h.rank === 0)?.internalIp ?? "";
    const sim = await e.sim.state();
    for (const planned of replica.ranks) {
      const host = rec.hosts.find((h) => h.rank === planned.rank);
      const simHost = Object.values(sim.hosts).find((h) => h.alive && h.internalIp === host?.internalIp);
      if (!host?.pgid || !simHost) throw new Error(`rank ${planned.rank} has no server`);
      expect(simHost.workerId).toBe(planned.workerId);
      const r = await e.sim.execOnHost(simHost.id, `cat /proc/${host.pgid}/cmdline | base64 -w0`);
      const cmdline = Buffer.from(r.stdout.trim(), "base64").toString("utf8").split("\0").slice(0, -1);
      // python -u -c BOOT KEY_FD NAMES <server flags>: the boot runs sglang-jax's entry point with the flags.
      expect(cmdline.slice(1, 3)).toEqual(["-u", "-c"]);
      const want = planned.argv.slice(4).map((a) => a.replace("<rank-0-internal-ip>", rank0Ip));
      expect(cmdline.slice(6)).toEqual(want);
      expect(want[want.indexOf("--node-rank") + 1]).toBe(String(planned.rank));
    }
    expect((await e.cli(["down", "planned", "-y"])).code).toBe(0);
  });
});
