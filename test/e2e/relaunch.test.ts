// Spot relaunch end to end on the simulated cloud: preemption seen from the TPU API first, remnants
// removed, a new slice with new addresses and a new worker order, ranks reassigned, serving again; zone
// failover on capacity and quota; giving up; one actor under the lock; cron's bare environment.
import { spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { flagName, flagsToConfig } from "../../src/cli/config-flags.js";
import { resolveConfig, specOf } from "../../src/core/config.js";
import { type DeploymentState, newState, serializeState, withReplica } from "../../src/core/state.js";
import { updateState } from "../sim/state.js";
import { type CliResult, type E2E, serverInfo, startE2E } from "./helpers.js";

let e: E2E;
let hook: { server: Server; url: string; events: Record<string, unknown>[] };

interface RelaunchJson {
  name: string;
  verdict: string | null;
  action: string;
  attempt: number;
  zone: string | null;
  nextAttemptAt: string | null;
  message: string;
}

const MIN = 60_000;
const ZONES = ["us-east5-a", "us-east5-b", "us-central1-b"];

function writeConfig(file: string, body: string): void {
  writeFileSync(join(e.sim.home, file), body);
}

/** Replica 0 (these deployments have one) with the deployment's config and history. */
function state(name: string) {
  return { ...e.replica(name), history: e.deployment(name).history };
}

async function mark(): Promise<{ sky: number; tpu: number }> {
  return { sky: (await e.sim.skyCalls()).length, tpu: tpuCalls().length };
}

function tpuCalls(): { method: string; request: Record<string, unknown> }[] {
  try {
    return readFileSync(join(e.sim.root, "calls", "tpu.jsonl"), "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => JSON.parse(l) as { method: string; request: Record<string, unknown> });
  } catch {
    return [];
  }
}

async function since(m: { sky: number; tpu: number }): Promise<{ sky: string[][]; tpu: string[] }> {
  return {
    sky: (await e.sim.skyCalls()).slice(m.sky).map((c) => c.argv),
    tpu: tpuCalls()
      .slice(m.tpu)
      .map((c) => c.method),
  };
}

const TPU_WRITES = new Set(["CreateNode", "DeleteNode", "UpdateNode", "StopNode", "StartNode"]);

function ok(r: CliResult): CliResult {
  if (r.code !== 0) throw new Error(`exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr.slice(-4000)}`);
  return r;
}

function relaunchJson(r: CliResult): RelaunchJson {
  const doc = r.json as { ok: boolean; result?: RelaunchJson; error?: RelaunchJson };
  const v = doc.ok ? doc.result : doc.error;
  if (!v) throw new Error(`no relaunch JSON in ${r.stdout}`);
  return v;
}

/** Rank 0's own view of the cluster it serves (the double answers /get_server_info). */
async function servedBy(name: string): Promise<Record<string, unknown>> {
  const s = state(name);
  const rank0 = s.hosts.find((h) => h.rank === 0);
  if (!rank0) throw new Error("no rank 0");
  const hostId = await hostIdOf(rank0.externalIp);
  return await serverInfo(e.sim, hostId, rank0.internalIp, s.config.server.port);
}

async function hostIdOf(externalIp: string): Promise<string> {
  const h = Object.values((await e.sim.state()).hosts).find((x) => x.externalIp === externalIp && x.alive);
  if (!h) throw new Error(`no live sim host at ${externalIp}`);
  return h.id;
}

async function assertServesWithWorkerRanks(name: string): Promise<void> {
  const s = state(name);
  expect(s.phase).toBe("serving");
  const sim = await e.sim.state();
  for (const h of s.hosts) {
    const host = Object.values(sim.hosts).find((x) => x.externalIp === h.externalIp && x.alive);
    expect(host, `rank ${h.rank} at ${h.externalIp} is a live host`).toBeDefined();
    // Ranks follow the TPU worker number, and rank 0's internal address is the rendezvous.
    expect(host?.workerId).toBe(h.workerId);
    expect(host?.internalIp).toBe(h.internalIp);
  }
  const rank0 = s.hosts.find((h) => h.rank === 0);
  expect(s.distInitAddr).toBe(`${rank0?.internalIp}:${s.config.server.distPort}`);
  const info = await servedBy(name);
  expect(info).toMatchObject({ dist_init_addr: s.distInitAddr, nnodes: s.hosts.length, node_rank: 0 });
  const peers = info.peers as { rank: number; internal_ip: string; worker_id: number }[];
  expect(peers.map((p) => [p.rank, p.worker_id, p.internal_ip])).toEqual(
    [...s.hosts].sort((a, b) => a.rank - b.rank).map((h) => [h.rank, h.workerId, h.internalIp]),
  );
}

beforeAll(async () => {
  e = await startE2E();
  const events: Record<string, unknown>[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => (body += d.toString()));
    req.on("end", () => {
      events.push(JSON.parse(body) as Record<string, unknown>);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  hook = { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/tpu?token=abc`, events };
  writeFileSync(join(e.sim.home, "secrets.env"), "HF_TOKEN=hf_only_in_the_file\n", { mode: 0o600 });
});

afterAll(async () => {
  await new Promise<void>((r) => hook?.server.close(() => r()));
  await e?.stop();
});

describe("spot v6e-32 preempted", () => {
  it("relaunch sees it from the TPU API, removes the remnant, relaunches with new hosts and ranks, and status shows it", async () => {
    writeConfig(
      "s32.yaml",
      `name: s32\ntpu: {accelerator: v6e-32, spot: true, zones: [${ZONES.join(", ")}]}\nserver: {secrets: [HF_TOKEN], secretsFile: ./secrets.env, readyTimeout: 5m}\nlaunch: {timeout: 5m}\n`,
    );
    ok(await e.cli(["up", "-c", "s32.yaml", "-q"], { env: { HF_TOKEN: "" } }));
    const before = state("s32");
    expect(before.hosts).toHaveLength(8);
    await assertServesWithWorkerRanks("s32");
    const oldNodes = Object.values((await e.sim.state()).nodes).filter((n) => n.labels["tpu-deploy"] === "s32");

    await e.sim.preempt("s32");
    const m = await mark();
    const r = await e.cli(["relaunch", "s32", "--json"], { env: { HF_TOKEN: "" } });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // It served minutes, not an hour: us-east5-a churns, so the next zone goes first.
    expect(relaunchJson(r)).toMatchObject({
      verdict: "preempted",
      action: "relaunch",
      attempt: 1,
      zone: "us-east5-b",
      nextAttemptAt: null,
    });
    const calls = await since(m);
    // The TPU API was asked first; no SkyPilot call came before the verdict.
    expect(calls.tpu[0]).toBe("ListNodes");
    expect(calls.sky[0]?.slice(0, 1)).toEqual(["status"]);
    // Remnants are checked (sky's record, then the TPU API for nodes labelled as the cluster's) before the launch.
    const launchAt = calls.sky.findIndex((a) => a[0] === "launch");
    expect(calls.sky.slice(0, launchAt).every((a) => a[0] === "status" || a[0] === "down")).toBe(true);
    expect(calls.tpu.filter((x) => x === "ListNodes").length).toBeGreaterThanOrEqual(2);
    expect(calls.sky.filter((a) => a[0] === "launch")).toHaveLength(1);
    // The PREEMPTED nodes are gone (sky down or our delete), the new ones are READY.
    const sim = await e.sim.state();
    for (const n of oldNodes) expect(sim.nodes[n.name]).toBeUndefined();

    const after = state("s32");
    expect(after.hosts).toHaveLength(8);
    const oldIps = new Set(before.hosts.flatMap((h) => [h.externalIp, h.internalIp]));
    for (const h of after.hosts) {
      expect(oldIps.has(h.externalIp)).toBe(false);
      expect(oldIps.has(h.internalIp)).toBe(false);
    }
    await assertServesWithWorkerRanks("s32");
    expect(after.relaunch).toMatchObject({ attempts: 0, gaveUp: false, churn: { "us-east5-a": 1 } });
    const events = after.history.map((h) => h.event);
    expect(events).toEqual(expect.arrayContaining(["preempted", "relaunch-attempt", "relaunched"]));
    const relaunched = after.history.findLast((h) => h.event === "relaunched");
    expect(relaunched?.durationMs).toBeGreaterThan(0);

    const st = ok(await e.cli(["status", "s32"]));
    expect(st.stdout).toContain("s32: serving");
    expect(st.stdout).toContain("preemptions 1, relaunches 1");
    expect(st.stdout).toMatch(/relaunched us-east5-b \(\d+(m\d+s|s)\)/);
    ok(await e.cli(["down", "s32", "-y", "-q"]));
  });
});

describe("spot v6e-16 through its life", () => {
  const cfg = `name: s16\ntpu: {accelerator: v6e-16, spot: true, zones: [${ZONES.join(", ")}]}\nserver: {secrets: [HF_TOKEN], secretsFile: ./secrets.env, readyTimeout: 5m}\nlaunch: {timeout: 5m}\nrelaunch: {maxAttempts: 2, webhook: "WEBHOOK"}\n`;
  const NO_ENV_SECRET = { HF_TOKEN: "" };

  beforeAll(async () => {
    writeConfig("s16.yaml", cfg.replace("WEBHOOK", hook.url));
    ok(await e.cli(["up", "-c", "s16.yaml", "-q"], { env: NO_ENV_SECRET }));
  });

  it("healthy: one TPU API read and one health probe; no sky call, no TPU write, nothing changes", async () => {
    const before = readFileSync(join(e.stateHome, "deployments", "s16", "state.json"), "utf8");
    const m = await mark();
    const r = await e.cli(["relaunch", "s16", "--json"], { env: NO_ENV_SECRET });
    expect(r.code).toBe(0);
    expect(relaunchJson(r)).toMatchObject({ verdict: "healthy", action: "none", attempt: 0, zone: "us-east5-a", nextAttemptAt: null });
    expect(await since(m)).toEqual({ sky: [], tpu: ["ListNodes"] });
    expect(readFileSync(join(e.stateHome, "deployments", "s16", "state.json"), "utf8")).toBe(before);
  });

  it("a secret that resolves nowhere: exit 2 before anything is asked or touched", async () => {
    const file = join(e.sim.home, "secrets.env");
    const text = readFileSync(file, "utf8");
    writeFileSync(file, "OTHER=1\n", { mode: 0o600 });
    try {
      const m = await mark();
      const r = await e.cli(["relaunch", "s16", "--json"], { env: NO_ENV_SECRET });
      expect(r.code).toBe(2);
      expect((r.json as { error: { code: string } }).error.code).toBe("secret_missing");
      expect(await since(m)).toEqual({ sky: [], tpu: [] });
    } finally {
      writeFileSync(file, text, { mode: 0o600 });
    }
  });

  it("servers crashed with hosts alive: restarts them on the same hosts, no reprovisioning", async () => {
    const before = state("s16");
    for (const h of before.hosts.filter((x) => x.rank === 0 || x.rank === 2)) {
      const killed = await e.sim.execOnHost(await hostIdOf(h.externalIp), `/bin/kill -KILL -- -${h.pgid}`);
      expect(killed.code).toBe(0);
    }
    const m = await mark();
    const r = await e.cli(["relaunch", "s16", "--json"], { env: NO_ENV_SECRET });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(relaunchJson(r)).toMatchObject({ verdict: "servers-down", action: "restart", attempt: 1 });
    const calls = await since(m);
    expect(calls.sky.filter((a) => a[0] === "launch" || a[0] === "down")).toEqual([]);
    expect(calls.tpu.filter((x) => TPU_WRITES.has(x))).toEqual([]);
    const after = state("s16");
    expect(after.hosts.map((h) => [h.rank, h.externalIp])).toEqual(before.hosts.map((h) => [h.rank, h.externalIp]));
    expect(after.hosts.every((h) => h.pgid !== undefined)).toBe(true);
    await assertServesWithWorkerRanks("s16");
    expect(after.relaunch.attempts).toBe(0);
    expect(after.history.at(-1)).toMatchObject({ event: "restarted" });
    expect(hook.events.map((x) => x.event)).toEqual(["started", "succeeded"]);
    expect(hook.events[0]).toMatchObject({ version: 1, name: "s16", attempt: 1, zone: "us-east5-a", time: expect.any(String) });
    // The secret's value (only in the secrets file) is in no webhook body and not in status --json.
    expect(JSON.stringify(hook.events)).not.toContain("hf_only_in_the_file");
    const st = await e.cli(["status", "s16", "--json"], { env: NO_ENV_SECRET });
    expect(st.code, st.stderr).toBe(0);
    expect(st.stdout).not.toContain("hf_only_in_the_file");
  });

  it("two relaunch runs at once after a preemption: exactly one acts", async () => {
    await e.sim.preempt("s16");
    const m = await mark();
    const first = e.cli(["relaunch", "s16"], { env: NO_ENV_SECRET });
    await waitFor(() => lockHolder("s16") !== undefined);
    const second = e.spawnCli(["relaunch", "s16"], { env: NO_ENV_SECRET });
    expect(await second.exit).toBe(0);
    expect(second.stdout()).toContain("another run is in progress");
    const r = await first;
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain("relaunched in");
    expect((await since(m)).sky.filter((a) => a[0] === "launch")).toHaveLength(1);
    await assertServesWithWorkerRanks("s16");
  });

  it("capacity gone in the first zone: the next zone serves", async () => {
    await e.sim.setFaults({ sky: { capacityZones: ["us-east5-a"] } });
    servedForHours("s16"); // so churn keeps the configured zone order

    await e.sim.preempt("s16");
    const m = await mark();
    const r = await e.cli(["relaunch", "s16", "--json"], { env: NO_ENV_SECRET });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(relaunchJson(r)).toMatchObject({ verdict: "preempted", action: "relaunch", zone: "us-east5-b" });
    const launches = (await since(m)).sky.filter((a) => a[0] === "launch").map((a) => a[a.indexOf("--infra") + 1]);
    expect(launches).toEqual(["gcp/us-east5/us-east5-a", "gcp/us-east5/us-east5-b"]);
    await assertServesWithWorkerRanks("s16");
    await e.sim.setFaults({});
  });

  it("quota exhausted in the region: the region is blocked and a zone elsewhere serves", async () => {
    await e.sim.setFaults({ sky: { quota: { zone: "us-east5-a", scope: "region" } } });
    servedForHours("s16");
    await e.sim.preempt("s16");
    const m = await mark();
    const r = await e.cli(["relaunch", "s16", "--json"], { env: NO_ENV_SECRET });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(relaunchJson(r)).toMatchObject({ verdict: "preempted", action: "relaunch", zone: "us-central1-b" });
    const launches = (await since(m)).sky.filter((a) => a[0] === "launch").map((a) => a[a.indexOf("--infra") + 1]);
    expect(launches).toEqual(["gcp/us-east5/us-east5-a", "gcp/us-central1/us-central1-b"]);
    expect(Date.parse(state("s16").relaunch.blocked["us-east5"] ?? "")).toBeGreaterThan(Date.now());
    await assertServesWithWorkerRanks("s16");
    await e.sim.setFaults({});
  });

  it("--timeout bounds an attempt: provisioning that hangs is cancelled and cleaned up, the attempt counts, and the next run finishes", async () => {
    servedForHours("s16");
    await e.sim.setFaults({ sky: { hangProvision: true } });
    await e.sim.preempt("s16");
    const r = await e.cli(["relaunch", "s16", "--timeout", "4s", "--json"], { env: NO_ENV_SECRET });
    expect(r.code, r.stdout).toBe(1);
    expect(r.json).toMatchObject({ ok: false, error: { code: "readiness_timeout", verdict: "preempted", action: "relaunch", attempt: 1 } });
    const s = state("s16");
    expect(s.relaunch.attempts).toBe(1);
    expect(Date.parse(s.relaunch.nextAttemptAt ?? "")).toBeGreaterThan(Date.now());
    expect(s.hosts).toEqual([]);
    await waitFor(async () => !Object.values((await e.sim.state()).clusters).some((c) => c.name === "s16"), 30_000);
    await e.sim.setFaults({});
    // --reset: a person decides not to wait out the backoff.
    const next = await e.cli(["relaunch", "s16", "--reset", "--json"], { env: NO_ENV_SECRET });
    expect(next.code, next.stdout).toBe(0);
    expect(relaunchJson(next)).toMatchObject({ verdict: "preempted", action: "relaunch", attempt: 1 });
    await assertServesWithWorkerRanks("s16");
  });

  it("watch runs each check as a relaunch in a child process: one report line while nothing changes, and it idles small", async () => {
    const w = e.spawnCli(["watch", "s16", "--interval", "1s"], { env: NO_ENV_SECRET });
    await w.waitFor(/watching s16/);
    // Three passes at least, each a relaunch child that read the TPU API once.
    const before = tpuCalls().length;
    await waitFor(async () => tpuCalls().length >= before + 3, 60_000);
    // The report came back from the child: printed once, not once a pass.
    expect(w.stdout().match(/^\[[^\]]+\] s16: healthy: /gm)).toHaveLength(1);
    // Between checks watch holds none of the libraries a check loads: far under the ~115 MB it took in-process.
    const rssKb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${w.child.pid}/status`, "utf8"))?.[1]);
    expect(rssKb).toBeLessThan(100 * 1024);
    w.child.kill("SIGTERM");
    expect(await w.exit).toBe(0);
    expect(w.stderr()).toContain("watch stopped");
  });

  it("relaunch beside watch: one acts; watch stopped by SIGTERM mid-relaunch leaves a consistent state, and the next run finishes", async () => {
    await e.sim.setFaults({ sky: { provisionDelayMs: 4000 } });
    const w = e.spawnCli(["watch", "s16", "--interval", "1s"], { env: NO_ENV_SECRET });
    await w.waitFor(/watching s16/);
    await e.sim.preempt("s16");
    await w.waitFor(/s16: relaunching/, 60_000);
    // A cron run meanwhile does nothing.
    const beside = await e.cli(["relaunch", "s16", "--json"], { env: NO_ENV_SECRET });
    expect(beside.code).toBe(0);
    expect(relaunchJson(beside)).toMatchObject({ verdict: null, action: "busy" });
    await w.waitFor(/launching s16/, 60_000);
    await waitFor(async () => Object.values((await e.sim.state()).clusters).some((c) => c.name === "s16"));
    w.child.kill("SIGTERM");
    expect(await w.exit).toBe(0);
    expect(w.stderr()).toContain("watch stopped");

    // Consistent: no lock, no half-made cluster or node, the record kept with the attempt not counted.
    expect(lockHolder("s16")).toBeUndefined();
    const sim = await e.sim.state();
    expect(Object.values(sim.clusters).filter((c) => c.name === "s16")).toEqual([]);
    expect(Object.values(sim.nodes).filter((n) => n.labels["tpu-deploy"] === "s16" && n.state !== "PREEMPTED")).toEqual([]);
    const s = state("s16");
    expect(s.hosts).toEqual([]);
    expect(s.relaunch).toMatchObject({ attempts: 0, gaveUp: false });
    expect(s.relaunch.nextAttemptAt).toBeUndefined();
    expect(s.history.at(-1)).toMatchObject({ event: "relaunch-attempt", detail: "interrupted" });

    await e.sim.setFaults({});
    const next = await e.cli(["relaunch", "s16", "--json"], { env: NO_ENV_SECRET });
    expect(next.code, next.stdout + next.stderr).toBe(0);
    expect(relaunchJson(next)).toMatchObject({ verdict: "preempted", action: "relaunch", attempt: 1 });
    await assertServesWithWorkerRanks("s16");
    // One preemption episode, one "preempted" event, however many runs it took.
    const episode = state("s16").history.slice(s.history.findLastIndex((h) => h.event === "preempted"));
    expect(episode.filter((h) => h.event === "preempted")).toHaveLength(1);
  });

  it("every zone empty until the attempts run out: backoff, then exit 4 and the webhook hears 'gave_up'; later runs do nothing until --reset", async () => {
    servedForHours("s16");
    await e.sim.setFaults({ sky: { capacityZones: ZONES } });
    await e.sim.preempt("s16");
    hook.events.length = 0;

    const t0 = Date.now();
    const first = await e.cli(["relaunch", "s16", "--json"], { env: NO_ENV_SECRET });
    expect(first.code, first.stdout).toBe(1);
    const j1 = relaunchJson(first);
    expect(j1).toMatchObject({ verdict: "preempted", action: "relaunch", attempt: 1 });
    // Default backoff: a minute, less up to half of it for jitter.
    const next = Date.parse(j1.nextAttemptAt ?? "");
    expect(next - t0).toBeGreaterThanOrEqual(29_000);
    expect(next - Date.now()).toBeLessThanOrEqual(60_000);

    const m = await mark();
    const waiting = await e.cli(["relaunch", "s16"], { env: NO_ENV_SECRET });
    expect(waiting.code).toBe(0);
    expect(waiting.stdout).toContain(`next attempt at ${j1.nextAttemptAt}`);
    expect((await since(m)).sky.filter((a) => a[0] === "launch")).toEqual([]);

    const later = () => new Date(Date.now() + 31 * MIN);
    const second = await e.cli(["relaunch", "s16", "--json"], { env: NO_ENV_SECRET, now: later });
    expect(second.code, second.stdout).toBe(4);
    expect(relaunchJson(second)).toMatchObject({ attempt: 2, nextAttemptAt: null });
    expect((second.json as { error: Record<string, unknown> }).error).toMatchObject({ code: "gave_up", lastError: { code: "capacity" } });
    expect(hook.events.map((x) => x.event)).toEqual(["started", "failed", "started", "failed", "gave_up"]);
    expect(hook.events.at(-1)).toMatchObject({ version: 1, event: "gave_up", name: "s16", attempt: 2, error: { code: "capacity" } });

    const m2 = await mark();
    const after = await e.cli(["relaunch", "s16"], { env: NO_ENV_SECRET, now: () => new Date(Date.now() + 5 * 60 * MIN) });
    expect(after.code).toBe(4);
    expect(after.stdout).toContain("gave up after 2 failed relaunch attempt(s)");
    expect(await since(m2)).toEqual({ sky: [], tpu: [] });

    await e.sim.setFaults({});
    const reset = await e.cli(["relaunch", "s16", "--reset", "--json"], { env: NO_ENV_SECRET, now: later });
    expect(reset.code, reset.stdout).toBe(0);
    expect(relaunchJson(reset)).toMatchObject({ verdict: "preempted", action: "relaunch", attempt: 1 });
    await assertServesWithWorkerRanks("s16");
  });

  it("from cron's bare environment: the scheduled line relaunches with HF_TOKEN only in the secrets file", async () => {
    const sch = e.spawnCli(["schedule", "s16", "--every", "1m", "--json"], { env: NO_ENV_SECRET });
    expect(await sch.exit).toBe(0);
    const { command } = (JSON.parse(sch.stdout()) as { result: { command: string } }).result;
    await e.sim.preempt("s16");
    // cron's environment: no PATH to sky, no HOME, no secrets; only the sim's own root for the fake sky.
    hook.events.length = 0;
    // Not spawnSync: the webhook receiver lives in this process and must keep answering.
    const status = await new Promise<number | null>((resolve) => {
      const child = spawn("env", ["-i", `TPD_SIM_ROOT=${e.sim.root}`, "PATH=/usr/bin:/bin", "/bin/sh", "-c", command], {
        cwd: "/",
        stdio: "ignore",
      });
      child.on("exit", (code) => resolve(code));
    });
    const log = readFileSync(join(e.stateHome, "logs", "relaunch-s16.log"), "utf8");
    expect(status, log).toBe(0);
    expect(log).not.toContain("warning");
    expect(hook.events.map((x) => x.event)).toEqual(["started", "succeeded"]);
    expect(log).toContain("s16: relaunching");
    expect(log).toMatch(/relaunched in us-/);
    await assertServesWithWorkerRanks("s16");
    ok(await e.cli(["down", "s16", "-y", "-q"]));
  });
});

describe("gc", () => {
  it("finds what nobody owns, refuses without -y on a non-TTY, removes it with -y, and keeps what relaunch will bring back", async () => {
    const one = (name: string, spot: boolean) =>
      `name: ${name}\ntpu: {accelerator: v6e-8, spot: ${spot}, zones: [us-east1-d]}\nserver: {readyTimeout: 5m}\nlaunch: {timeout: 5m}\n`;
    for (const [name, spot] of [
      ["orphan", false],
      ["gone1", false],
      ["waits", true],
    ] as const) {
      writeConfig(`${name}.yaml`, one(name, spot));
      ok(await e.cli(["up", "-c", `${name}.yaml`, "-q"]));
    }
    // orphan: its state file lost. gone1: its cluster deleted behind tpu-deploy's back. waits: spot, preempted, awaiting relaunch.
    rmSync(join(e.stateHome, "deployments", "orphan"), { recursive: true });
    await new Promise<void>((resolve) =>
      spawn("sky", ["down", "-y", "gone1"], { env: e.env, stdio: "ignore" }).on("exit", () => resolve()),
    );
    await e.sim.preempt("waits");
    // A PREEMPTED node SkyPilot has forgotten (its termination failed): only the API still shows it.
    const leaked = await updateState(e.sim.root, (st) => {
      const node = Object.values(st.nodes).find((n) => n.labels["tpu-deploy"] === "waits");
      if (!node) throw new Error("no node of waits");
      const name = node.name.replace(/nodes\/.*$/, "nodes/leaked-1");
      st.nodes[name] = {
        ...node,
        name,
        hostIds: [],
        labels: { ...node.labels, "tpu-deploy": "old-gone", "skypilot-cluster-name": "old-gone-1234" },
      };
      return name;
    });

    const dry = await e.cli(["gc", "--dry-run", "--json"]);
    expect(dry.code, dry.stdout).toBe(0);
    const found = (dry.json as { result: { found: { kind: string; name: string }[] } }).result.found;
    expect(found.map((i) => [i.kind, i.name]).sort()).toEqual([
      ["cluster", "orphan"],
      ["state", "gone1"],
      ["tpu-node", leaked],
    ]);

    const m = await mark();
    const refused = await e.cli(["gc"]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain("-y");
    expect((await since(m)).sky.filter((a) => a[0] === "down")).toEqual([]);

    const r = await e.cli(["gc", "-y"]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const sim = await e.sim.state();
    expect(sim.clusters.orphan).toBeUndefined();
    expect(sim.nodes[leaked]).toBeUndefined();
    expect(e.state("gone1")).toBeUndefined();
    expect(e.state("waits")).toBeDefined();
    expect(readdirSync(join(e.stateHome, "deployments")).sort()).toEqual(["waits"]);

    const again = await e.cli(["gc", "--dry-run"]);
    expect(again.stdout).toContain("nothing to clean up");
    ok(await e.cli(["down", "waits", "-y", "-q"]));
  });
});

describe("relaunch --all", () => {
  it("reports a list; mixed results are exit 3, agreeing ones keep their code", async () => {
    const make = (name: string, secret: string) => {
      const r = resolveConfig(
        [{ label: "flags", keyName: flagName, data: flagsToConfig({ name, nodes: 4, spot: true, secret: [secret] }) }],
        e.env,
      );
      if (!r.ok) throw new Error(JSON.stringify(r.issues));
      return newState(r.config, specOf(r.config));
    };
    writeState(withReplica(make("all-a", "HF_TOKEN"), 0, (r) => ({ ...r, relaunch: { ...r.relaunch, attempts: 3, gaveUp: true } })));
    writeState(make("all-b", "NOT_SET_ANYWHERE"));
    const m = await mark();
    const mixed = await e.cli(["relaunch", "--all", "--json"], { env: { HF_TOKEN: "hf_long_enough_1" } });
    expect(mixed.code).toBe(3);
    const doc = mixed.json as { ok: false; error: { code: string; results: RelaunchJson[] } };
    expect(doc.error.code).toBe("partial");
    expect(doc.error.results.map((x) => [x.name, x.action])).toEqual([
      ["all-a", "gave-up"],
      ["all-b", "none"],
    ]);
    expect(await since(m)).toEqual({ sky: [], tpu: [] });

    rmSync(join(e.stateHome, "deployments", "all-b"), { recursive: true });
    const one = await e.cli(["relaunch", "--all"], { env: { HF_TOKEN: "hf_long_enough_1" } });
    expect(one.code).toBe(4);
    expect(one.stdout).toContain("all-a: gave up after 3 failed relaunch attempt(s)");
    rmSync(join(e.stateHome, "deployments", "all-a"), { recursive: true });
  });
});

/** As if the cluster had served for hours with no churn anywhere: a preemption then keeps the zone order. */
function servedForHours(name: string): void {
  writeState(
    withReplica(e.deployment(name), 0, (r) => ({
      ...r,
      servingSince: new Date(Date.now() - 3 * 60 * MIN).toISOString(),
      relaunch: { ...r.relaunch, churn: {} },
    })),
  );
}

function writeState(s: DeploymentState): void {
  mkdirSync(join(e.stateHome, "deployments", s.name), { recursive: true });
  writeFileSync(join(e.stateHome, "deployments", s.name, "state.json"), serializeState(s, new Date()));
}

function lockHolder(name: string): { pid: number; command: string } | undefined {
  try {
    return JSON.parse(readFileSync(join(e.stateHome, "deployments", name, "lock"), "utf8")) as { pid: number; command: string };
  } catch {
    return undefined;
  }
}

async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 50));
  }
}
