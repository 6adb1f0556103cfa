import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/core/config.js";
import { deployHoldMs, judgeLock, type LockInfo, type PidProbe, parseLockInfo } from "../../src/core/lock.js";

const MIN = 60_000;
const BOOT = "45689a7f-b498-4032-8c7f-d427065f164d";
const holder: LockInfo = {
  pid: 4242,
  host: "build-1",
  command: "tpu-deploy relaunch",
  startedAt: "2026-01-01T12:00:00.000Z",
  procStartTicks: 1000,
  bootId: BOOT,
  deadline: "2026-01-01T13:00:00.000Z",
};
const here = { host: "build-1", bootId: BOOT, now: new Date("2026-01-01T12:30:00.000Z") };
const running: PidProbe = { alive: true, startTicks: 1000 };

describe("judgeLock", () => {
  it.each<{ name: string; lock?: Partial<LockInfo>; at?: Partial<typeof here>; probe?: PidProbe; want: ReturnType<typeof judgeLock> }>([
    { name: "its holder runs, within the deadline: held", want: { kind: "held", stuck: false } },
    {
      name: "its pid is dead: stale",
      probe: { alive: false, startTicks: undefined },
      want: { kind: "stale", why: "it is no longer running" },
    },
    {
      name: "its pid runs another process (other start): stale",
      probe: { alive: true, startTicks: 2000 },
      want: { kind: "stale", why: "it is no longer running (its pid now belongs to another process)" },
    },
    {
      name: "written in another boot: stale, whatever the pid",
      at: { bootId: "00000000-0000-0000-0000-000000000000" },
      want: { kind: "stale", why: "it was written before this machine rebooted" },
    },
    {
      name: "start time unreadable here: the pid check only",
      probe: { alive: true, startTicks: undefined },
      want: { kind: "held", stuck: false },
    },
    { name: "boot id unreadable here: not evidence", at: { bootId: undefined }, want: { kind: "held", stuck: false } },
    {
      name: "previous format (no boot id, start, deadline), live pid: held, never stuck",
      lock: { bootId: undefined, procStartTicks: undefined, deadline: undefined },
      at: { now: new Date("2030-01-01T00:00:00.000Z") },
      want: { kind: "held", stuck: false },
    },
    {
      name: "previous format, dead pid: stale",
      lock: { bootId: undefined, procStartTicks: undefined, deadline: undefined },
      probe: { alive: false, startTicks: undefined },
      want: { kind: "stale", why: "it is no longer running" },
    },
    {
      name: "exactly deadline + 5 min: still held",
      at: { now: new Date("2026-01-01T13:05:00.000Z") },
      want: { kind: "held", stuck: false },
    },
    { name: "1 ms past deadline + 5 min: stuck", at: { now: new Date("2026-01-01T13:05:00.001Z") }, want: { kind: "held", stuck: true } },
    {
      name: "another host: never stale (its pid means nothing here), stuck past its deadline",
      lock: { host: "laptop", bootId: "other" },
      at: { now: new Date("2026-01-02T00:00:00.000Z") },
      probe: { alive: false, startTicks: undefined },
      want: { kind: "held", stuck: true },
    },
  ])("$name", ({ lock, at, probe, want }) => {
    const asked: number[] = [];
    const v = judgeLock({ ...holder, ...lock }, { ...here, ...at }, (pid) => {
      asked.push(pid);
      return probe ?? running;
    });
    expect(v).toEqual(want);
    if (lock?.host) expect(asked).toEqual([]);
  });
});

describe("parseLockInfo", () => {
  it("reads both formats, ignores an odd optional field rather than refusing the lock, refuses a lock without its holder", () => {
    expect(parseLockInfo(JSON.stringify(holder))).toEqual(holder);
    const old = { pid: 1, host: "h", command: "up", startedAt: "2026-01-01T12:00:00.000Z" };
    expect(parseLockInfo(JSON.stringify(old))).toEqual(old);
    expect(parseLockInfo(JSON.stringify({ ...holder, procStartTicks: "x", deadline: "soon" }))).toEqual({
      ...holder,
      procStartTicks: undefined,
      deadline: undefined,
    });
    for (const bad of ["", "{", "null", "[]", "{}", JSON.stringify({ ...old, pid: "1" })]) expect(parseLockInfo(bad), bad).toBeUndefined();
  });
});

describe("deployHoldMs", () => {
  const config = (data: Record<string, unknown>) => {
    const r = resolveConfig([{ label: "tpu-deploy.yaml", keyName: (p) => p, data: { name: "d", tpu: { nodes: 4 }, ...data } }], {});
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    return r.config;
  };

  it("every zone's launch timeout + the readiness timeout + 30 min, or the run's timeout + 30 min", () => {
    const c = config({
      tpu: { nodes: 4, zones: ["us-east5-a", "us-east5-b"] },
      launch: { timeout: "10m" },
      server: { readyTimeout: "1h" },
    });
    expect(deployHoldMs(c)).toBe((2 * 10 + 60 + 30) * MIN);
    expect(deployHoldMs(c, 3 * 60 * MIN)).toBe((180 + 30) * MIN);
  });
});
