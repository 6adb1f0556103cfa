// The benchmark's fan-out targets (bench/up.ts coordinationTargets): a miss that the floor measured in the same
// run misses too counts as beyond this machine only while tpu-deploy stays near that floor, so a fan-out that
// regressed still fails the run.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Results } from "../../bench/results.js";
import { coordinationTargets } from "../../bench/up.js";

beforeEach(() => {
  vi.spyOn(process.stdout, "write").mockImplementation(() => true);
});
afterEach(() => {
  vi.restoreAllMocks();
});

/** One run's medians: tpu-deploy at 1 and 64 hosts, the sequential baseline and the floor at 64. */
function measured(m: { one: number; ours: number; baseline: number; floor: number }): Results {
  const r = new Results();
  const add = (name: string, hosts: number, v: number) => r.add(name, "ms", [v], "test", { hosts });
  add("coordination.ranksStarted", 1, m.one);
  add("coordination.ranksStarted", 64, m.ours);
  add("coordination.baseline.ranksStarted", 64, m.baseline);
  add("coordination.floor.ranksStarted", 64, m.floor);
  for (const h of [1, 64]) {
    r.add("coordination.sshConnectionsPerHost", "count", [1], "test", { hosts: h });
    r.add("readiness.detection", "ms", [100], "test", { hosts: h });
  }
  r.add("product.up.peakRssMb", "MB", [150], "test", { hosts: 64 });
  coordinationTargets(r, [1, 64], true);
  return r;
}

const fanOut = (r: Results) => r.targets.filter((t) => /within 3×|10× faster/.test(t.requirement));
/** Each fan-out target's [met, beyondMachine]. */
const verdicts = (r: Results) => fanOut(r).map((x) => [x.met, x.beyondMachine]);
const plainMisses = [
  [false, undefined],
  [false, undefined],
];

describe("coordinationTargets", () => {
  it("met targets are met, with no exemption", () => {
    expect(verdicts(measured({ one: 300, ours: 800, baseline: 27_000, floor: 700 }))).toEqual([
      [true, undefined],
      [true, undefined],
    ]);
  });

  it("a miss the floor misses too, with tpu-deploy near the floor: beyond this machine, with the evidence", () => {
    const t = fanOut(measured({ one: 303, ours: 15_630, baseline: 27_300, floor: 14_340 }));
    expect(t.every((x) => !x.met)).toBe(true);
    for (const x of t) expect(x.beyondMachine).toMatch(/the floor .* took 14\.34 s.*tpu-deploy is 1\.09× the floor/);
  });

  it("a miss the floor misses too, with tpu-deploy far above the floor: a plain miss that fails the run", () => {
    expect(verdicts(measured({ one: 303, ours: 36_600, baseline: 30_400, floor: 14_340 }))).toEqual(plainMisses);
  });

  it("a miss the floor would meet: a plain miss", () => {
    expect(verdicts(measured({ one: 300, ours: 5_000, baseline: 27_000, floor: 800 }))).toEqual(plainMisses);
  });
});
