// Coordination fan-out (issue 12, items 1, 2, 5 and 8): for each size, `tpu-deploy up` from "hosts known" to
// "every rank started" and to "serving" (the double's load delay 0), side by side with the same per-host work
// done as the sglang-jax SkyPilot guide does it by hand: one OpenSSH `ssh` per host, one after another,
// running the very commands tpu-deploy sends. Also: SSH connections each host's sshd accepted while tpu-deploy
// coordinated, how long after rank 0 first answered /health_generate 200 `up` said "serving", the CPU time and
// peak memory of the tpu-deploy process, and the wall time of `down`.
//
// Timestamps, all on this machine's wall clock:
// - hosts known: the Cloud TPU API emulator receiving the ListNodes call that gives the hosts' worker
//   numbers (calls/tpu.jsonl), the last thing `up` learns before it connects;
// - every rank started: `up`'s "rendezvous" progress line (printed as soon as every start command returned);
// - serving: its "serving" line; rank 0 answering: the double's first /health_generate 200 (calls/server.jsonl).
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { bindRank, type RankPlan } from "../src/core/plan.js";
import { skyHosts } from "../src/adapters/sky-ssh.js";
import { connectHost } from "../src/adapters/ssh/connection.js";
import { installAndStartCommand, remoteFiles, runScript, stopFromPidFileCommand } from "../src/core/remote.js";
import type { SimState } from "../test/sim/state.js";
import type { Cloud, ProductHost } from "./cloud.js";
import { tail, type TimedLine } from "./proc.js";
import type { Results } from "./results.js";
import { fmtMs, median } from "./stats.js";

export interface CoordinationOptions {
  sizes: number[];
  iterations: number;
}

interface OurRun {
  knownToStarted: number;
  knownToServing: number;
  readinessMs: number;
  connections: number[];
  cpuMs: number;
  peakRssKb: number;
  /** Share of the machine's CPU time busy (all processes) from `finding hosts` to `rendezvous`, 0..1. */
  machineBusy: number;
}

interface BaselineRun {
  knownToStarted: number;
  knownToServing: number;
}

interface FloorRun {
  knownToStarted: number;
}

const PHASE = (p: string) => new RegExp(`^\\[[^\\]]*\\] (?:replica \\d+: )?${p}$`);

export async function coordination(cloud: Cloud, results: Results, opts: CoordinationOptions): Promise<void> {
  const sizes = [...opts.sizes].sort((a, b) => a - b);
  for (const hosts of sizes) {
    const name = `bench-${hosts}`;
    const failures: string[] = [];
    const ours: OurRun[] = [];
    const base: BaselineRun[] = [];
    const floor: FloorRun[] = [];
    for (let i = 0; i < opts.iterations; i++) {
      // Every run after the first changes a server setting, so `up` keeps the slice and restarts the servers:
      // the same discover → port check → start → ready path, without provisioning again.
      const env: Record<string, string> = i === 0 ? {} : { TPD_BENCH_RUN: String(i) };
      // A run that fails is reported (and fails the benchmark) but does not throw away the other runs and
      // sizes: on a loaded machine a 64-host start can fail for the simulation's own reasons, and which run
      // failed, and how, is worth as much as the numbers.
      try {
        ours.push(await ourRun(cloud, name, hosts, env));
      } catch (err) {
        failures.push(`tpu-deploy up, run ${i + 1}: ${firstLines(err)}`);
        process.stdout.write(`  ${hosts} host(s), run ${i + 1}: tpu-deploy up FAILED: ${firstLines(err)}\n`);
        continue;
      }
      const r = ours.at(-1);
      process.stdout.write(
        `  ${hosts} host(s), run ${i + 1}: tpu-deploy ranks started ${fmtMs(r?.knownToStarted ?? Number.NaN)}, serving ${fmtMs(r?.knownToServing ?? Number.NaN)}\n`,
      );
      try {
        base.push(await baselineRun(cloud, name, hosts, env));
      } catch (err) {
        failures.push(`sequential ssh baseline, run ${i + 1}: ${firstLines(err)}`);
        process.stdout.write(`  ${hosts} host(s), run ${i + 1}: baseline FAILED: ${firstLines(err)}\n`);
        continue;
      }
      const b = base.at(-1);
      process.stdout.write(
        `  ${hosts} host(s), run ${i + 1}: sequential ssh ranks started ${fmtMs(b?.knownToStarted ?? Number.NaN)}, serving ${fmtMs(b?.knownToServing ?? Number.NaN)}\n`,
      );
      try {
        floor.push(await floorRun(cloud, name, hosts, env));
      } catch (err) {
        failures.push(`parallel floor, run ${i + 1}: ${firstLines(err)}`);
        continue;
      }
      process.stdout.write(
        `  ${hosts} host(s), run ${i + 1}: parallel floor ranks started ${fmtMs(floor.at(-1)?.knownToStarted ?? Number.NaN)}\n`,
      );
    }
    results.target(
      `every coordination run at ${hosts} host(s) completed`,
      failures.length === 0,
      failures.length === 0 ? `${opts.iterations} of ${opts.iterations}` : failures.join("; "),
    );
    const p = { hosts };
    results.add(
      "coordination.ranksStarted",
      "ms",
      ours.map((r) => r.knownToStarted),
      "tpu-deploy up: TPU API ListNodes received → `rendezvous` line",
      p,
    );
    results.add(
      "coordination.serving",
      "ms",
      ours.map((r) => r.knownToServing),
      "tpu-deploy up: ListNodes received → `serving` line",
      p,
    );
    results.add(
      "coordination.baseline.ranksStarted",
      "ms",
      base.map((r) => r.knownToStarted),
      "one OpenSSH ssh per host in sequence, same stop and start commands",
      p,
    );
    results.add(
      "coordination.baseline.serving",
      "ms",
      base.map((r) => r.knownToServing),
      "the same, then ssh to rank 0 polling /health_generate until 200",
      p,
    );
    results.add(
      "coordination.floor.ranksStarted",
      "ms",
      floor.map((r) => r.knownToStarted),
      "the floor: the baseline's commands sent to every host at once, one ssh2 connection each, nothing else (no discovery, no checks)",
      p,
    );
    results.add(
      "coordination.sshConnectionsPerHost",
      "count",
      ours.flatMap((r) => r.connections),
      "connections each host's sshd accepted from `finding hosts` to the end of up",
      p,
    );
    results.add(
      "readiness.detection",
      "ms",
      ours.map((r) => r.readinessMs),
      "double's first /health_generate 200 (calls/server.jsonl) → up's `serving` line",
      p,
    );
    results.add(
      "coordination.machineCpuBusy",
      "%",
      ours.map((r) => r.machineBusy * 100),
      "share of the machine's CPU (every core, every process: the simulated hosts run here) busy from `finding hosts` to `rendezvous`",
      p,
    );
    results.add(
      "product.up.cpuSeconds",
      "s",
      ours.map((r) => r.cpuMs / 1000),
      "utime+stime of the tpu-deploy process (/proc)",
      p,
    );
    results.add(
      "product.up.peakRssMb",
      "MB",
      ours.map((r) => r.peakRssKb / 1024),
      "VmHWM of the tpu-deploy process (/proc), sampled every 20 ms",
      p,
    );
    const hostIds = (await cloud.clusterHosts(name)).map((h) => h.id);
    await cloud.killServers(name, hostIds);
    const down = await cloud.must(["down", name, "-y", "-q"]);
    results.add("down.wall", "ms", [down.wallMs], "tpu-deploy down: stop servers, sky down, verify gone", p);
  }
}

/** One `tpu-deploy up` (the first launches the slice; later ones restart the servers on it). */
async function ourRun(cloud: Cloud, name: string, hosts: number, env: Record<string, string>): Promise<OurRun> {
  const args = ["up", "-n", name, "--nodes", String(hosts), ...Object.entries(env).flatMap(([k, v]) => ["--env", `${k}=${v}`])];
  // Counted synchronously as the `finding hosts` line arrives: sky's own SSH sessions (setup) are over by then,
  // and tpu-deploy has not connected yet (it runs `sky status` and reads SkyPilot's SSH config first).
  let before: Map<string, number> | undefined;
  let cpuAtFinding: CpuTimes | undefined;
  let cpuAtStarted: CpuTimes | undefined;
  const onLine = (l: TimedLine) => {
    if (before === undefined && PHASE("finding hosts").test(l.text)) {
      before = cloud.acceptedSsh(hostIdsNow(cloud, name));
      cpuAtFinding = machineCpu();
    }
    if (cpuAtStarted === undefined && PHASE("rendezvous").test(l.text)) cpuAtStarted = machineCpu();
  };
  const run = await cloud.must(args, { onLine });
  if (process.env.TPD_BENCH_PHASES) process.stdout.write(phaseTimeline(run.lines, run.startedAt));
  const started = findLine(run.lines, PHASE("rendezvous"), "every rank started");
  const serving = findLine(run.lines, PHASE("serving"), "serving");
  const list = (await cloud.calls("tpu")).filter(
    (c) => c.method === "ListNodes" && Number(c.t) >= run.startedAt && Number(c.t) <= started.t,
  );
  const known = Number(list.at(-1)?.t);
  if (!Number.isFinite(known)) throw new Error(`no Cloud TPU API ListNodes call during ${args.join(" ")}`);
  const simHosts = await cloud.clusterHosts(name);
  const rank0 = simHosts[0];
  const answered = (await cloud.calls("server")).find(
    (c) => c.path === "/health_generate" && c.status === 200 && c.host === rank0?.hostname && Number(c.t) >= started.t,
  );
  if (!answered) throw new Error(`rank 0 of ${name} never recorded a /health_generate 200`);
  if (before === undefined) throw new Error(`up printed no "finding hosts" line:\n${tail(run.lines)}`);
  const after = cloud.acceptedSsh(simHosts.map((h) => h.id));
  const first = before;
  return {
    knownToStarted: started.t - known,
    knownToServing: serving.t - known,
    readinessMs: serving.t - Number(answered.t),
    connections: simHosts.map((h) => (after.get(h.id) ?? 0) - (first.get(h.id) ?? 0)),
    cpuMs: run.usage.cpuMs,
    peakRssKb: run.usage.peakRssKb,
    machineBusy: cpuAtFinding && cpuAtStarted ? busyShare(cpuAtFinding, cpuAtStarted) : Number.NaN,
  };
}

/** up's progress lines, each with the time since the previous one (TPD_BENCH_PHASES=1: where a run's time goes). */
function phaseTimeline(lines: readonly TimedLine[], from: number): string {
  let last = from;
  return lines
    .filter((l) => l.stream === "stderr")
    .map((l) => {
      const d = l.t - last;
      last = l.t;
      return `    +${fmtMs(d).padStart(8)}  ${l.text}\n`;
    })
    .join("");
}

/** An error's first lines (the tpu-deploy error a failed run printed), for one line of the report. */
function firstLines(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const lines = text.split("\n");
  const said = lines.filter((l) => /tpu-deploy (up|relaunch|down)?:|ERROR|exited/.test(l)).slice(0, 4);
  return (said.length > 0 ? said : lines.slice(0, 3))
    .map((l) => l.trim())
    .join(" / ")
    .slice(0, 600);
}

interface CpuTimes {
  busy: number;
  total: number;
}

/**
 * The machine's CPU time so far, from the first line of /proc/stat (in ticks, all cores). The simulated hosts
 * share this machine's cores, so when every core is busy while tpu-deploy coordinates, the wall time measures
 * the simulation's CPU (sshd, shells, Python doubles) as much as the coordination: shown next to the numbers.
 */
function machineCpu(): CpuTimes {
  const f = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

function busyShare(a: CpuTimes, b: CpuTimes): number {
  return b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : Number.NaN;
}

/**
 * The by-hand way, timed from the moment the host list is known: for each host in rank order, one `ssh` that
 * stops what runs there and starts that rank, with the commands tpu-deploy itself sends (core/remote.ts), then
 * `ssh` to rank 0 asking /health_generate until it answers 200. No port check: a person does not run one
 * (it only makes the baseline faster).
 */
async function baselineRun(cloud: Cloud, name: string, hosts: number, env: Record<string, string>): Promise<BaselineRun> {
  const { commands, rank0, simHosts } = await byHand(cloud, name, hosts, env);
  const ssh = sshArgs(cloud, name);
  const known = Date.now();
  for (const { h, cmd } of commands) {
    const r = await runSsh([...ssh, h.sshAlias, cmd]);
    // The stop's word (none, gone, stopped…) and then the start's "pid starttime".
    if (r.code !== 0 || !startedOk(r.stdout)) {
      throw new Error(`baseline start of rank ${h.rank} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
    }
  }
  const started = Date.now();
  await pollServing(ssh, rank0);
  const serving = Date.now();
  await cloud.killServers(
    name,
    simHosts.map((h) => h.id),
  );
  return { knownToStarted: started - known, knownToServing: serving - known };
}

/**
 * The least any coordinator can do here: the baseline's very commands, sent to every host at once over one
 * ssh2 connection each (the library tpu-deploy uses), timed from the first connection to the last start
 * returning. No discovery, no port check, no state: what this machine's cores allow for N hosts at all.
 */
async function floorRun(cloud: Cloud, name: string, hosts: number, env: Record<string, string>): Promise<FloorRun> {
  const { commands, simHosts } = await byHand(cloud, name, hosts, env);
  const targets = new Map((await skyHosts(cloud.sim.home, name, cloud.env)).map((t) => [t.alias, t]));
  const known = Date.now();
  await Promise.all(
    commands.map(async ({ h, cmd }) => {
      const t = targets.get(h.sshAlias);
      if (!t) throw new Error(`no SSH config entry for ${h.sshAlias}`);
      const session = await connectHost({ ...t, hostKeys: { kind: "first-use" } }, { timeoutMs: 120_000 });
      try {
        const r = await session.exec(cmd, { timeoutMs: 120_000 });
        if (r.code !== 0 || !startedOk(r.stdout))
          throw new Error(`floor start of rank ${h.rank} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
      } finally {
        await session.close();
      }
    }),
  );
  const started = Date.now();
  await cloud.killServers(
    name,
    simHosts.map((h) => h.id),
  );
  return { knownToStarted: started - known };
}

function startedOk(stdout: string): boolean {
  return /^\d+ \d+$/.test(stdout.trim().split("\n").at(-1) ?? "");
}

/**
 * The by-hand way's commands, host by host in rank order: stop what runs there and start that rank, with the
 * commands tpu-deploy itself sends (core/remote.ts). No port check: a person does not run one (it only makes
 * the baseline faster). The servers of the run before are killed first, from outside.
 */
async function byHand(cloud: Cloud, name: string, hosts: number, env: Record<string, string>) {
  const simHosts = await cloud.clusterHosts(name);
  await cloud.killServers(
    name,
    simHosts.map((h) => h.id),
  );
  const dry = await cloud.must([
    "up",
    "-n",
    name,
    "--nodes",
    String(hosts),
    ...Object.entries(env).flatMap(([k, v]) => ["--env", `${k}=${v}`]),
    "--dry-run",
    "--json",
  ]);
  const plan = (
    JSON.parse(dry.stdout) as {
      result: { plan: { replicas: { ranks: RankPlan[]; prerequisites: { python: string; marker: string } }[] } };
    }
  ).result.plan.replicas[0];
  if (!plan) throw new Error("the dry run printed no replica");
  const ranked = cloud.productHosts(name);
  const rank0 = ranked[0];
  if (!rank0 || ranked.length !== hosts) throw new Error(`${name}: expected ${hosts} ranked hosts, found ${ranked.length}`);
  const files = remoteFiles(name);
  const commands = ranked.map((h) => {
    const planned = plan.ranks.find((r) => r.rank === h.rank);
    if (!planned) throw new Error(`rank ${h.rank} is not in the plan`);
    const script = runScript({ files, argv: bindRank(planned, rank0.internalIp), env, secretNames: [] });
    return { h, cmd: `(${stopFromPidFileCommand(files)})\n${installAndStartCommand(files, script, plan.prerequisites)}` };
  });
  return { commands, rank0, simHosts };
}

/** OpenSSH with SkyPilot's generated config for the cluster; the key by path (ssh expands ~ from passwd, not $HOME). */
function sshArgs(cloud: Cloud, cluster: string): string[] {
  return [
    "ssh",
    "-F",
    join(cloud.sim.home, ".sky", "generated", "ssh", cluster),
    "-i",
    join(cloud.sim.home, ".sky", "generated", "ssh-keys", `${cluster}.key`),
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
  ];
}

async function pollServing(ssh: string[], rank0: ProductHost): Promise<void> {
  const probe = `python3 -c "import urllib.request
try: print(urllib.request.urlopen('http://${rank0.internalIp}:30000/health_generate', timeout=60).status)
except Exception as e: print('no', e)"`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    const r = await runSsh([...ssh, rank0.sshAlias, probe]);
    if (r.stdout.trim() === "200") return;
    if (Date.now() > deadline) throw new Error(`baseline: rank 0 did not serve within 120 s: ${r.stdout}${r.stderr}`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

function runSsh(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const [cmd = "", ...args] = argv;
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

function findLine(lines: readonly TimedLine[], re: RegExp, what: string): TimedLine {
  const l = lines.find((x) => x.stream === "stderr" && re.test(x.text));
  if (!l) throw new Error(`up printed no "${what}" line:\n${tail([...lines])}`);
  return l;
}

/** The cluster's hosts as the sim's state file has them right now, read synchronously. */
function hostIdsNow(cloud: Cloud, cluster: string): string[] {
  const s = JSON.parse(readFileSync(join(cloud.sim.root, "state.json"), "utf8")) as SimState;
  return s.clusters[cluster]?.slices.flatMap((sl) => sl.hostIds) ?? [];
}

/** How far above the floor tpu-deploy may be for a target the floor misses too to count as beyond the machine. */
const FLOOR_SLACK = 1.5;

/** The targets for coordination, readiness and the up process's memory. */
export function coordinationTargets(results: Results, sizes: number[], enforce: boolean): void {
  const small = Math.min(...sizes);
  const large = Math.max(...sizes);
  const med = (name: string, hosts: number) => results.get(name, { hosts })?.summary.median ?? Number.NaN;
  const ours = med("coordination.ranksStarted", large);
  const one = med("coordination.ranksStarted", small);
  const baseline = med("coordination.baseline.ranksStarted", large);
  const tag = enforce ? "" : " (smoke: not enforced)";
  // The floor at the large size: the same start commands sent to every host at once and nothing else. When even
  // that misses a target, no coordinator can meet it on this machine (its cores run every simulated host). The
  // exemption holds only while tpu-deploy stays near the floor (it also discovers hosts and proves the ports):
  // a fan-out that regressed fails the run as before.
  const floor = med("coordination.floor.ranksStarted", large);
  const nearFloor = ours <= FLOOR_SLACK * floor;
  const floorSays = (what: string) =>
    nearFloor
      ? `the floor (the baseline's commands to all ${large} hosts at once over one ssh2 connection each, nothing else) took ${fmtMs(floor)}, ${what}; tpu-deploy is ${(ours / floor).toFixed(2)}× the floor (at most ${FLOOR_SLACK}× allowed)`
      : undefined;
  results.target(
    `${large} hosts within 3× of ${small} host(s), hosts known → every rank started${tag}`,
    ours <= 3 * one,
    `${fmtMs(ours)} vs ${fmtMs(one)} (${(ours / one).toFixed(2)}×)`,
    floor > 3 * one ? floorSays(`${(floor / one).toFixed(1)}× tpu-deploy's ${small}-host time`) : undefined,
  );
  results.target(
    `at ${large} hosts at least 10× faster than one ssh per host in sequence${tag}`,
    baseline >= 10 * ours,
    `${fmtMs(ours)} vs ${fmtMs(baseline)} (${(baseline / ours).toFixed(1)}× faster)`,
    baseline < 10 * floor ? floorSays(`only ${(baseline / floor).toFixed(1)}× faster than the sequential baseline`) : undefined,
  );
  const busy = med("coordination.machineCpuBusy", large);
  if (busy >= 90)
    results.note(
      `at ${large} hosts the machine's cores were ${busy.toFixed(0)}% busy (median) from \`finding hosts\` to \`rendezvous\`: the simulated hosts' sshd, shells and Python share them, so that wall time is bounded by the simulation's CPU, not only by tpu-deploy's fan-out`,
    );
  const conns = sizes.flatMap((h) => results.get("coordination.sshConnectionsPerHost", { hosts: h })?.values ?? []);
  results.target(
    `exactly one SSH connection per host during coordination${tag}`,
    conns.length > 0 && conns.every((c) => c === 1),
    `per host and run: min ${Math.min(...conns)}, max ${Math.max(...conns)} over ${conns.length} host-runs`,
  );
  for (const h of sizes) {
    const r = results.get("readiness.detection", { hosts: h })?.values ?? [];
    results.target(`readiness detected within 1 s (median), ${h} host(s)${tag}`, median(r) < 1000, `median ${fmtMs(median(r))}`);
  }
  const rss = results.get("product.up.peakRssMb", { hosts: large })?.summary.max ?? Number.NaN;
  results.target(`peak RSS of up coordinating ${large} hosts under 200 MB${tag}`, rss < 200, `max ${rss.toFixed(1)} MB`);
}
