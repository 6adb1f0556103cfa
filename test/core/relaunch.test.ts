import { describe, expect, it } from "vitest";
import {
  actionFor,
  attemptFailed,
  attemptInterrupted,
  attemptSucceeded,
  backoffMs,
  beginAttempt,
  chooseSpot,
  decide,
  DEFAULT_BACKOFF,
  type Evidence,
  gate,
  needsClearing,
  notePreemption,
  orderZones,
  type Probe,
  type ProcessState,
  resetRelaunch,
  type SkyView,
  type VerdictKind,
  type BackoffPolicy,
} from "../../src/core/relaunch.js";
import type { RelaunchState } from "../../src/core/state.js";
import { backoffPolicy } from "../../src/app/relaunch.js";

const NOW = new Date("2026-01-01T12:00:00.000Z");
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString();
const MIN = 60_000;

/** What the cloud would answer to each probe; the loop below asks only what decide() wants. */
interface World {
  apiServes?: boolean;
  spot?: boolean;
  phase?: Evidence["phase"];
  hosts?: number;
  startedAt?: string;
  nodes?: string[] | "unavailable";
  healthConfirmed?: Evidence["healthConfirmed"];
  runDurationEndsAt?: string;
  sky?: SkyView;
  skyRefreshed?: SkyView;
  health?: Evidence["health"];
  processes?: ProcessState[];
}

function run(w: World): { probes: Probe[]; verdict: VerdictKind } {
  const ev: Evidence = {
    apiServes: w.apiServes ?? true,
    spot: w.spot ?? true,
    phase: w.phase ?? "serving",
    hosts: w.hosts ?? 4,
    startedAt: w.startedAt,
    readyTimeoutMs: 45 * MIN,
    now: NOW,
    runDurationEndsAt: w.runDurationEndsAt,
  };
  const probes: Probe[] = [];
  for (let i = 0; i < 10; i++) {
    const d = decide(ev);
    if (d.kind === "verdict") return { probes, verdict: d.verdict.kind };
    probes.push(d.probe);
    const answer = <T>(v: T | undefined, what: string): T => {
      if (v === undefined) throw new Error(`the test world has no answer for ${what}`);
      return v;
    };
    switch (d.probe) {
      case "tpu-nodes": {
        const n = answer(w.nodes, "tpu-nodes");
        ev.tpuNodes =
          n === "unavailable"
            ? { unavailable: "UNAVAILABLE: connect ECONNREFUSED" }
            : n.map((state, j) => ({ name: `projects/p/locations/z/nodes/n${j}`, state }));
        break;
      }
      case "sky-status":
        ev.sky = answer(w.sky, "sky-status");
        break;
      case "sky-refresh":
        ev.skyRefreshed = answer(w.skyRefreshed, "sky-refresh");
        break;
      case "health":
        ev.health = answer(w.health, "health");
        break;
      case "processes":
        ev.processes = answer(w.processes, "processes");
        break;
      case "health-confirm":
        ev.healthConfirmed = answer(w.healthConfirmed, "health-confirm");
        break;
    }
  }
  throw new Error("decide() never reached a verdict");
}

const UP = { status: "UP" };
const INIT = { status: "INIT" };

const RUNNING = ["running", "running", "running", "running"] as ProcessState[];

describe("decide: evidence in order, stopping at the first conclusive answer", () => {
  it.each<{ what: string; world: World; probes: Probe[]; verdict: VerdictKind }>([
    // Healthy costs exactly one status read and one health probe.
    {
      what: "v6e healthy: TPU API then one probe",
      world: { nodes: ["READY"], health: "ok" },
      probes: ["tpu-nodes", "health"],
      verdict: "healthy",
    },
    {
      what: "v7 healthy: sky status then one probe",
      world: { apiServes: false, spot: false, sky: UP, health: "ok" },
      probes: ["sky-status", "health"],
      verdict: "healthy",
    },
    // Fail safe: what cannot be read is acted on never.
    { what: "TPU API cannot be read: hold", world: { nodes: "unavailable" }, probes: ["tpu-nodes"], verdict: "unknown" },
    {
      what: "v7, sky status cannot be read: hold",
      world: { apiServes: false, sky: { unavailable: "sky status exited 1" } },
      probes: ["sky-status"],
      verdict: "unknown",
    },
    {
      what: "no TPU node, sky status -r cannot be read: hold",
      world: { nodes: [], skyRefreshed: { unavailable: "timed out" } },
      probes: ["tpu-nodes", "sky-refresh"],
      verdict: "unknown",
    },
    {
      what: "no TPU node but SkyPilot says UP: the two disagree, hold",
      world: { nodes: [], skyRefreshed: UP },
      probes: ["tpu-nodes", "sky-refresh"],
      verdict: "unknown",
    },
    // Preemption is conclusive from the API alone: no SSH to dead hosts.
    { what: "node PREEMPTED", world: { nodes: ["PREEMPTED"] }, probes: ["tpu-nodes"], verdict: "preempted" },
    { what: "node TERMINATED (24 h limit)", world: { nodes: ["TERMINATED"] }, probes: ["tpu-nodes"], verdict: "preempted" },
    {
      what: "legacy layout, one of two slices PREEMPTED",
      world: { nodes: ["READY", "PREEMPTED"] },
      probes: ["tpu-nodes"],
      verdict: "preempted",
    },
    {
      what: "node missing, cluster gone after refresh",
      world: { nodes: [], skyRefreshed: "missing" },
      probes: ["tpu-nodes", "sky-refresh"],
      verdict: "preempted",
    },
    {
      what: "on-demand node missing: gone",
      world: { spot: false, nodes: [], skyRefreshed: "missing" },
      probes: ["tpu-nodes", "sky-refresh"],
      verdict: "gone",
    },
    {
      what: "v7 missing from sky status: gone without a refresh",
      world: { apiServes: false, spot: false, sky: "missing" },
      probes: ["sky-status"],
      verdict: "gone",
    },
    // The cloud is working on it, or in a state that is not a preemption.
    { what: "node CREATING: wait", world: { nodes: ["CREATING"] }, probes: ["tpu-nodes"], verdict: "starting" },
    { what: "node REPAIRING: wait", world: { nodes: ["REPAIRING"] }, probes: ["tpu-nodes"], verdict: "starting" },
    { what: "node STOPPED: not a preemption, hold", world: { nodes: ["STOPPED"] }, probes: ["tpu-nodes"], verdict: "unknown" },
    { what: "node DELETING: hold", world: { nodes: ["DELETING"] }, probes: ["tpu-nodes"], verdict: "unknown" },
    {
      what: "v7 INIT, refreshed INIT: a lost host or a network blip, hold",
      world: { apiServes: false, spot: false, sky: INIT, skyRefreshed: INIT },
      probes: ["sky-status", "sky-refresh"],
      verdict: "unknown",
    },
    // Newer SkyPilot says why a cluster is INIT (init_kind): a launch in progress is waited for, an
    // abnormal one is named and held; neither is relaunched.
    {
      what: "v7 INIT, refreshed INIT that SkyPilot calls launching: wait",
      world: {
        apiServes: false,
        sky: INIT,
        skyRefreshed: { status: "INIT", initKind: "launching", initReason: "Retrying provisioning after 30s" },
      },
      probes: ["sky-status", "sky-refresh"],
      verdict: "starting",
    },
    {
      what: "v7 INIT, refreshed INIT that SkyPilot calls unhealthy: hold",
      world: {
        apiServes: false,
        sky: INIT,
        skyRefreshed: { status: "INIT", initKind: "unhealthy", initReason: "Cluster is abnormal because one or more nodes terminated." },
      },
      probes: ["sky-status", "sky-refresh"],
      verdict: "unknown",
    },
    {
      what: "no TPU node yet while SkyPilot says launching: wait",
      world: { nodes: [], skyRefreshed: { status: "INIT", initKind: "launching" } },
      probes: ["tpu-nodes", "sky-refresh"],
      verdict: "starting",
    },
    {
      what: "no TPU node while SkyPilot calls the INIT cluster unhealthy: hold",
      world: { nodes: [], skyRefreshed: { status: "INIT", initKind: "unhealthy" } },
      probes: ["tpu-nodes", "sky-refresh"],
      verdict: "unknown",
    },
    {
      what: "v7 INIT, refreshed UP: on to the servers",
      world: { apiServes: false, sky: INIT, skyRefreshed: UP, health: "ok" },
      probes: ["sky-status", "sky-refresh", "health"],
      verdict: "healthy",
    },
    {
      what: "v7 gone after a refresh (spot): preempted",
      world: { apiServes: false, sky: INIT, skyRefreshed: "missing" },
      probes: ["sky-status", "sky-refresh"],
      verdict: "preempted",
    },
    // TPU7x: SkyPilot's cached UP, hosts unreachable: refresh before calling it a network problem.
    {
      what: "v7 cached UP, hosts unreachable, refresh says gone: gone",
      world: {
        apiServes: false,
        spot: false,
        sky: UP,
        health: "unreachable",
        processes: ["unreachable", "unreachable"],
        skyRefreshed: "missing",
      },
      probes: ["sky-status", "health", "processes", "sky-refresh"],
      verdict: "gone",
    },
    {
      what: "v7 past tpu.maxRunHours, VMs deleted: preempted (capacity taken back)",
      world: {
        apiServes: false,
        spot: false,
        sky: UP,
        health: "unreachable",
        processes: ["unreachable", "unreachable"],
        skyRefreshed: "missing",
        runDurationEndsAt: ago(MIN),
      },
      probes: ["sky-status", "health", "processes", "sky-refresh"],
      verdict: "preempted",
    },
    {
      what: "v7 cached UP, hosts unreachable, refresh still UP: a network problem, hold",
      world: { apiServes: false, spot: false, sky: UP, health: "unreachable", processes: ["unreachable", "running"], skyRefreshed: UP },
      probes: ["sky-status", "health", "processes", "sky-refresh"],
      verdict: "unknown",
    },
    // Hosts fine, servers not.
    {
      what: "a scheduler died, its main process serves /health: restart",
      world: { nodes: ["READY"], health: "failing", processes: ["running", "no-scheduler", "running", "running"] },
      probes: ["tpu-nodes", "health", "processes"],
      verdict: "servers-down",
    },
    {
      what: "no scheduler yet, early in the start: still coming up",
      world: {
        nodes: ["READY"],
        health: "unreachable",
        processes: ["no-scheduler", "running"],
        hosts: 2,
        phase: "starting",
        startedAt: ago(MIN),
      },
      probes: ["tpu-nodes", "health", "processes"],
      verdict: "starting",
    },
    {
      what: "rank 2 dead",
      world: { nodes: ["READY"], health: "unreachable", processes: ["running", "running", "dead", "running"] },
      probes: ["tpu-nodes", "health", "processes"],
      verdict: "servers-down",
    },
    {
      what: "every rank dead",
      world: { nodes: ["READY"], health: "no-listener", processes: ["dead", "dead", "dead", "dead"] },
      probes: ["tpu-nodes", "health", "processes"],
      verdict: "servers-down",
    },
    {
      what: "wedged: all running, /health_generate fails for a minute, long after the start",
      world: { nodes: ["READY"], health: "failing", processes: RUNNING, startedAt: ago(3 * 60 * MIN), healthConfirmed: "failing" },
      probes: ["tpu-nodes", "health", "processes", "health-confirm"],
      verdict: "servers-down",
    },
    {
      what: "one failed probe of a busy server: confirmed healthy, no restart",
      world: { nodes: ["READY"], health: "failing", processes: RUNNING, startedAt: ago(3 * 60 * MIN), healthConfirmed: "ok" },
      probes: ["tpu-nodes", "health", "processes", "health-confirm"],
      verdict: "healthy",
    },
    {
      what: "still coming up: phase starting, all running, inside readyTimeout",
      world: { nodes: ["READY"], health: "unreachable", processes: RUNNING, phase: "starting", startedAt: ago(10 * MIN) },
      probes: ["tpu-nodes", "health", "processes"],
      verdict: "starting",
    },
    {
      what: "phase starting but past readyTimeout: restart once confirmed",
      world: {
        nodes: ["READY"],
        health: "unreachable",
        processes: RUNNING,
        phase: "starting",
        startedAt: ago(50 * MIN),
        healthConfirmed: "failing",
      },
      probes: ["tpu-nodes", "health", "processes", "health-confirm"],
      verdict: "servers-down",
    },
    {
      what: "phase starting, a rank died: restart, not wait",
      world: {
        nodes: ["READY"],
        health: "unreachable",
        processes: ["running", "dead", "running", "running"],
        phase: "starting",
        startedAt: ago(MIN),
      },
      probes: ["tpu-nodes", "health", "processes"],
      verdict: "servers-down",
    },
    {
      what: "no hosts recorded (an up died before starting servers), node READY",
      world: { hosts: 0, phase: "launching", nodes: ["READY"] },
      probes: ["tpu-nodes"],
      verdict: "servers-down",
    },
    {
      what: "a relaunch interrupted after teardown: no hosts, nothing in the cloud",
      world: { hosts: 0, phase: "failed", nodes: [], skyRefreshed: "missing" },
      probes: ["tpu-nodes", "sky-refresh"],
      verdict: "preempted",
    },
    {
      what: "SSH to a rank fails while the node is READY: a network problem, hold (never relaunch a READY slice)",
      world: { nodes: ["READY"], health: "unreachable", processes: ["running", "unreachable", "running", "running"] },
      probes: ["tpu-nodes", "health", "processes"],
      verdict: "unknown",
    },
  ])("$what", ({ world, probes, verdict }) => {
    expect(run(world)).toEqual({ probes, verdict });
  });

  it("never asks for a probe twice", () => {
    const r = run({
      nodes: ["READY"],
      health: "failing",
      processes: ["running"],
      hosts: 1,
      startedAt: ago(99 * MIN),
      healthConfirmed: "failing",
    });
    expect(new Set(r.probes).size).toBe(r.probes.length);
  });

  it("a READY node is never relaunched, whatever the other probes say", () => {
    const worlds: World[] = (["ok", "failing", "no-listener", "unreachable"] as const).flatMap((health) =>
      (["running", "dead", "unreachable", "not started"] as const).flatMap((p) =>
        (["ok", "failing"] as const).map((healthConfirmed) => ({
          nodes: ["READY"],
          health,
          processes: [p, "running"],
          hosts: 2,
          healthConfirmed,
        })),
      ),
    );
    for (const w of worlds) expect(actionFor(run(w).verdict)).not.toBe("relaunch");
  });
});

describe("actionFor", () => {
  it.each<[VerdictKind, string]>([
    ["healthy", "none"],
    ["starting", "wait"],
    ["servers-down", "restart"],
    ["preempted", "relaunch"],
    ["gone", "relaunch"],
    ["unknown", "hold"],
  ])("%s → %s", (v, a) => {
    expect(actionFor(v)).toBe(a);
  });
});

describe("backoff: exponential, capped, jitter only shortens", () => {
  const P = { baseMs: 60_000, maxMs: 10 * MIN, factor: 2, jitter: 0.5 };
  it.each([
    { failures: 1, random: 0, want: 60_000 },
    { failures: 2, random: 0, want: 120_000 },
    { failures: 3, random: 0, want: 240_000 },
    { failures: 4, random: 0, want: 480_000 },
    { failures: 5, random: 0, want: 600_000 }, // capped
    { failures: 50, random: 0, want: 600_000 },
    { failures: 1, random: 1, want: 30_000 },
    { failures: 3, random: 0.5, want: 180_000 },
    { failures: 5, random: 1, want: 300_000 },
    { failures: 0, random: 0, want: 60_000 }, // treated as the first
    { failures: 2, random: 7, want: 60_000 }, // a bad random is clamped
  ])("failure $failures, random $random → $want ms", ({ failures, random, want }) => {
    expect(backoffMs(failures, P, () => random)).toBe(want);
  });

  it("no jitter: exactly the exponential", () => {
    expect(backoffMs(3, { ...P, jitter: 0 }, () => 0.9)).toBe(240_000);
  });

  it("the default starts at a minute and stops at 30 minutes", () => {
    expect(backoffMs(1, DEFAULT_BACKOFF, () => 0)).toBe(60_000);
    expect(backoffMs(99, DEFAULT_BACKOFF, () => 0)).toBe(30 * MIN);
  });
});

const fresh = (over: Partial<RelaunchState> = {}): RelaunchState => ({ attempts: 0, blocked: {}, churn: {}, spotFailures: 0, ...over });

describe("gate", () => {
  it.each<{ what: string; r: RelaunchState; want: ReturnType<typeof gate> }>([
    { what: "nothing recorded", r: fresh(), want: { kind: "go" } },
    {
      what: "inside the backoff window",
      r: fresh({ attempts: 1, nextAttemptAt: "2026-01-01T12:05:00.000Z" }),
      want: { kind: "backoff", until: "2026-01-01T12:05:00.000Z" },
    },
    { what: "window just passed", r: fresh({ attempts: 1, nextAttemptAt: "2026-01-01T12:00:00.000Z" }), want: { kind: "go" } },
    {
      what: "gave up wins over a window",
      r: fresh({ attempts: 3, gaveUp: true, nextAttemptAt: "2026-01-01T13:00:00.000Z" }),
      want: { kind: "gave-up", attempts: 3 },
    },
  ])("$what", ({ r, want }) => {
    expect(gate(r, NOW)).toEqual(want);
  });
});

describe("chooseSpot (relaunch.onDemandAfter)", () => {
  it.each([
    { spot: false, failures: 0, after: undefined, want: false },
    { spot: false, failures: 5, after: 2, want: false },
    { spot: true, failures: 0, after: undefined, want: true },
    { spot: true, failures: 99, after: undefined, want: true },
    { spot: true, failures: 1, after: 2, want: true },
    { spot: true, failures: 2, after: 2, want: false },
    { spot: true, failures: 3, after: 2, want: false },
    { spot: true, failures: 0, after: 1, want: true },
  ])("spot=$spot after $failures spot failures, onDemandAfter=$after → $want", ({ spot, failures, after, want }) => {
    expect(chooseSpot(spot, failures, after)).toBe(want);
  });

  it("goes back to spot at the next relaunch: success clears the spot failures", () => {
    const afterOnDemand = attemptSucceeded(fresh({ attempts: 3, spotFailures: 2 }));
    expect(chooseSpot(true, afterOnDemand.spotFailures, 2)).toBe(true);
  });
});

describe("orderZones: churn moves a zone back, ties keep the configured order", () => {
  const Z = ["us-east5-a", "us-east5-b", "us-central1-b", "us-east1-d"];
  it.each<{ churn: Record<string, number>; want: string[] }>([
    { churn: {}, want: Z },
    { churn: { "us-east5-a": 1 }, want: ["us-east5-b", "us-central1-b", "us-east1-d", "us-east5-a"] },
    { churn: { "us-east5-a": 2, "us-east5-b": 1 }, want: ["us-central1-b", "us-east1-d", "us-east5-b", "us-east5-a"] },
    { churn: { "us-east5-b": 1, "us-east1-d": 1 }, want: ["us-east5-a", "us-central1-b", "us-east5-b", "us-east1-d"] },
    { churn: { "europe-west4-a": 5 }, want: Z }, // a zone not configured changes nothing
  ])("$churn", ({ churn, want }) => {
    expect(orderZones(Z, churn)).toEqual(want);
  });
});

describe("notePreemption: first sight of an episode, churn for young clusters", () => {
  it("a cluster that served 20 minutes raises its zone's churn and records the time", () => {
    const r = notePreemption(fresh(), { zone: "us-east5-a", servedMs: 20 * MIN, now: NOW });
    expect(r).toMatchObject({ first: true, young: true });
    expect(r.relaunch.churn).toEqual({ "us-east5-a": 1 });
    expect(r.relaunch.preemptedAt).toBe(NOW.toISOString());
  });

  it("a cluster that served 5 hours lowers the churn, and a zero score disappears", () => {
    const r = notePreemption(fresh({ churn: { "us-east5-a": 1, "us-east5-b": 2 } }), {
      zone: "us-east5-a",
      servedMs: 5 * 60 * MIN,
      now: NOW,
    });
    expect(r.young).toBe(false);
    expect(r.relaunch.churn).toEqual({ "us-east5-b": 2 });
  });

  it("later runs of the same episode change nothing", () => {
    const once = notePreemption(fresh(), { zone: "us-east5-a", servedMs: 0, now: NOW }).relaunch;
    const twice = notePreemption(once, { zone: "us-east5-a", servedMs: 0, now: new Date(NOW.getTime() + MIN) });
    expect(twice.first).toBe(false);
    expect(twice.relaunch).toBe(once);
  });
});

describe("attempt bookkeeping across cron runs", () => {
  const f = (r: RelaunchState, spot = true, random = 0) =>
    attemptFailed(r, { spot, now: NOW, maxAttempts: 3, policy: { ...DEFAULT_BACKOFF, jitter: 0.5 }, random: () => random });

  it("three failures with maxAttempts 3: backoff grows, then gave up with no next attempt", () => {
    let r = fresh();
    const seen: (string | undefined)[] = [];
    for (let i = 0; i < 3; i++) {
      r = f(beginAttempt(r));
      seen.push(r.nextAttemptAt);
    }
    expect(seen).toEqual(["2026-01-01T12:01:00.000Z", "2026-01-01T12:02:00.000Z", undefined]);
    expect(r).toMatchObject({ attempts: 3, gaveUp: true, spotFailures: 3 });
    expect(gate(r, NOW)).toEqual({ kind: "gave-up", attempts: 3 });
  });

  it("jitter shortens the wait by up to half", () => {
    expect(f(beginAttempt(fresh()), true, 1).nextAttemptAt).toBe("2026-01-01T12:00:30.000Z");
  });

  it("failed restarts (not spot launches) do not count toward onDemandAfter", () => {
    expect(f(beginAttempt(fresh()), false).spotFailures).toBe(0);
  });

  it("an interrupted attempt is not counted and leaves no backoff", () => {
    const r = attemptInterrupted(beginAttempt(fresh({ attempts: 1, nextAttemptAt: undefined })), 1);
    expect(r.attempts).toBe(1);
    expect(gate(r, NOW)).toEqual({ kind: "go" });
  });

  it("serving again resets everything of the episode but keeps what was learnt about zones", () => {
    const r = attemptSucceeded(
      fresh({
        attempts: 2,
        gaveUp: false,
        spotFailures: 2,
        nextAttemptAt: "x",
        preemptedAt: "y",
        churn: { a: 1 },
        blocked: { "us-east5": "z" },
      }),
    );
    expect(r).toEqual({
      attempts: 0,
      gaveUp: false,
      spotFailures: 0,
      nextAttemptAt: undefined,
      preemptedAt: undefined,
      churn: { a: 1 },
      blocked: { "us-east5": "z" },
    });
    expect(needsClearing(r)).toBe(false);
  });

  it("--reset lifts a give-up but keeps the episode's preemption time (for time back to serving)", () => {
    const r = resetRelaunch(fresh({ attempts: 3, gaveUp: true, spotFailures: 3, preemptedAt: "y", churn: { a: 2 } }));
    expect(r).toMatchObject({ attempts: 0, gaveUp: false, spotFailures: 0, preemptedAt: "y", churn: { a: 2 } });
    expect(gate(r, NOW)).toEqual({ kind: "go" });
  });

  it.each([
    { r: fresh(), want: false },
    { r: fresh({ attempts: 1 }), want: true },
    { r: fresh({ preemptedAt: "x" }), want: true },
    { r: fresh({ churn: { a: 3 } }), want: false },
  ])("needsClearing($r) = $want", ({ r, want }) => {
    expect(needsClearing(r)).toBe(want);
  });
});

describe("backoff policy: flags, then the deployment's relaunch.backoff/backoffMax, then the defaults", () => {
  const config = (backoffMs?: number, backoffMaxMs?: number) =>
    ({ relaunch: { maxAttempts: 3, onDemandAfter: undefined, webhook: undefined, backoffMs, backoffMaxMs } }) as unknown as Parameters<
      typeof backoffPolicy
    >[0];
  it.each<[string, number | undefined, number | undefined, Partial<BackoffPolicy>, number, number]>([
    ["defaults", undefined, undefined, {}, 60_000, 30 * 60_000],
    ["config", 120_000, 3_600_000, {}, 120_000, 3_600_000],
    ["flags win over config", 120_000, 3_600_000, { baseMs: 5_000 }, 5_000, 3_600_000],
    ["a base above the default cap raises the cap", 45 * 60_000, undefined, {}, 45 * 60_000, 45 * 60_000],
  ])("%s", (_name, base, max, flags, wantBase, wantMax) => {
    const p = backoffPolicy(config(base, max), flags);
    expect([p.baseMs, p.maxMs]).toEqual([wantBase, wantMax]);
    expect(p.factor).toBe(DEFAULT_BACKOFF.factor);
  });
});
