// Relaunch and watch on a spot v6e deployment (issue 12, items 3, 5 and 6):
// - `relaunch` on a healthy deployment (the cron case): wall time and every external call it made, counted in
//   the sim's records (calls/sky.jsonl, calls/tpu.jsonl, calls/server.jsonl, the hosts' sshd logs);
// - `watch --interval 15s` idle: its resident memory between and during healthy passes;
// - preemption at a random moment (the TPU node turns PREEMPTED, its hosts die): time from then until watch
//   prints that the relaunch starts.
import { spawnSync } from "node:child_process";
import { repoRoot } from "../test/sim/sim.js";
import type { Cloud } from "./cloud.js";
import { sleep } from "./cloud.js";
import type { Results } from "./results.js";
import { fmtMs } from "./stats.js";

export interface WatchOptions {
  iterations: number;
  intervalS: number;
  enforce: boolean;
}

const NAME = "bench-watch";

export async function watchAndRelaunch(cloud: Cloud, results: Results, opts: WatchOptions): Promise<void> {
  await cloud.must(["up", "-n", NAME, "--nodes", "1", "--spot", "-q"]);
  await relaunchCost(cloud, results, opts);
  await watchRuns(cloud, results, opts);
  await cloud.must(["down", NAME, "-y", "-q"]);
}

async function relaunchCost(cloud: Cloud, results: Results, opts: WatchOptions): Promise<void> {
  const hostIds = (await cloud.clusterHosts(NAME)).map((h) => h.id);
  const rows = { wall: [] as number[], skyLaunch: [] as number[], skyStatus: [] as number[], skyOther: [] as number[] };
  const more = {
    tpuReads: [] as number[],
    tpuWrites: [] as number[],
    healthProbes: [] as number[],
    health: [] as number[],
    ssh: [] as number[],
  };
  for (let i = 0; i < opts.iterations; i++) {
    const sky0 = (await cloud.calls("sky")).length;
    const tpu0 = (await cloud.calls("tpu")).length;
    const srv0 = (await cloud.calls("server")).length;
    const ssh0 = cloud.acceptedSsh(hostIds);
    const r = await cloud.must(["relaunch", NAME]);
    if (!/healthy/.test(r.stdout)) throw new Error(`relaunch on a healthy deployment said: ${r.stdout}${r.stderr}`);
    const sky = (await cloud.calls("sky")).slice(sky0);
    const tpu = (await cloud.calls("tpu")).slice(tpu0);
    const srv = (await cloud.calls("server")).slice(srv0);
    const ssh1 = cloud.acceptedSsh(hostIds);
    const verb = (c: Record<string, unknown>) => (Array.isArray(c.argv) ? String(c.argv[0]) : "");
    rows.wall.push(r.wallMs);
    rows.skyLaunch.push(sky.filter((c) => verb(c) === "launch").length);
    rows.skyStatus.push(sky.filter((c) => verb(c) === "status").length);
    rows.skyOther.push(sky.filter((c) => !["launch", "status"].includes(verb(c))).length);
    const read = (c: Record<string, unknown>) => /^(Get|List)/.test(String(c.method));
    more.tpuReads.push(tpu.filter(read).length);
    more.tpuWrites.push(tpu.filter((c) => !read(c)).length);
    more.healthProbes.push(srv.filter((c) => c.path === "/health_generate").length);
    more.health.push(srv.filter((c) => c.path === "/health").length);
    more.ssh.push(hostIds.reduce((n, id) => n + (ssh1.get(id) ?? 0) - (ssh0.get(id) ?? 0), 0));
  }
  const how = "per `tpu-deploy relaunch` on a healthy 1-host spot v6e deployment";
  results.add("relaunchHealthy.wall", "ms", rows.wall, "`tpu-deploy relaunch NAME`, process start to exit");
  results.add("relaunchHealthy.skyLaunch", "count", rows.skyLaunch, `sky launch calls ${how}`);
  results.add("relaunchHealthy.skyStatus", "count", rows.skyStatus, `sky status calls ${how}`);
  results.add("relaunchHealthy.skyOther", "count", rows.skyOther, `other sky calls ${how}`);
  results.add("relaunchHealthy.tpuReads", "count", more.tpuReads, `Cloud TPU API Get*/List* RPCs ${how}`);
  results.add("relaunchHealthy.tpuWrites", "count", more.tpuWrites, `Cloud TPU API RPCs that are not reads ${how}`);
  results.add("relaunchHealthy.healthProbes", "count", more.healthProbes, `/health_generate answered by rank 0 ${how}`);
  results.add("relaunchHealthy.health", "count", more.health, `/health answered by rank 0 ${how}`);
  results.add("relaunchHealthy.sshConnections", "count", more.ssh, `SSH connections accepted by the hosts ${how}`);
  const tag = opts.enforce ? "" : " (smoke: not enforced)";
  const all = (xs: number[], ok: (x: number) => boolean) => xs.length > 0 && xs.every(ok);
  const reads = more.tpuReads.map((x, i) => x + (rows.skyStatus[i] ?? 0));
  results.target(
    `relaunch on a healthy deployment: no sky launch, no TPU API writes${tag}`,
    all(rows.skyLaunch, (x) => x === 0) && all(more.tpuWrites, (x) => x === 0),
    `sky launch ${Math.max(...rows.skyLaunch)}, TPU API writes ${Math.max(...more.tpuWrites)} (most in one run)`,
  );
  results.target(
    `relaunch on a healthy deployment: one sky status or one TPU API read, one health probe${tag}`,
    all(reads, (x) => x === 1) && all(more.healthProbes, (x) => x === 1),
    `status reads per run ${[...new Set(reads)].join("/")} (sky status ${[...new Set(rows.skyStatus)].join("/")}, TPU API ${[...new Set(more.tpuReads)].join("/")}), /health_generate per run ${[...new Set(more.healthProbes)].join("/")}, other sky calls ${Math.max(...rows.skyOther)}`,
  );
}

async function watchRuns(cloud: Cloud, results: Results, opts: WatchOptions): Promise<void> {
  const intervalMs = opts.intervalS * 1000;
  const w = cloud.cli(["watch", NAME, "--interval", `${opts.intervalS}s`], { sampleMs: 100 });
  try {
    await w.waitFor(/healthy/, { timeoutMs: 60_000 });
    // Idle: nothing to do but a healthy pass every interval. Two passes (one in the smoke run) and the sleeps around them.
    const rss: number[] = [];
    const until = Date.now() + (opts.enforce ? 2 : 1) * intervalMs + 1000;
    while (Date.now() < until) {
      const u = w.usage();
      if (u && Number.isFinite(u.rssKb)) rss.push(u.rssKb / 1024);
      await sleep(200);
    }
    const peak = (w.usage()?.peakRssKb ?? Number.NaN) / 1024;
    results.add(
      "memory.watchIdle.rssMb",
      "MB",
      rss,
      "VmRSS of the watch process itself (each check's `relaunch` child is its own process), every 200 ms while it watches a healthy deployment",
    );
    results.add("memory.watchIdle.peakRssMb", "MB", [peak], "VmHWM of the watch process itself after its first idle passes");
    // Not a target: what the libraries watch needs cost before tpu-deploy's own code runs, so that a miss can
    // be told apart from growth in tpu-deploy itself.
    results.add("memory.floor.nodeMb", "MB", [nodeRss([])], "RSS of `node` that loads nothing");
    results.add(
      "memory.floor.librariesMb",
      "MB",
      [nodeRss(["ssh2", "google-gax", "@google-cloud/tpu"])],
      "RSS of `node` that only loads ssh2, google-gax and @google-cloud/tpu and makes a TpuClient (what watch loads)",
    );
    const tag = opts.enforce ? "" : " (smoke: not enforced)";
    results.target(
      `watch idle under 100 MB${tag}`,
      peak < 100,
      `peak ${peak.toFixed(1)} MB (VmHWM), RSS at most ${Math.max(...rss).toFixed(1)} MB`,
    );

    const detection: number[] = [];
    for (let i = 0; i < opts.iterations; i++) {
      // A random moment of watch's cycle: anywhere in its sleep or its next pass.
      await sleep(Math.random() * (intervalMs + 2000));
      await cloud.sim.preempt(NAME);
      const preemptedAt = Date.now(); // from now on the TPU API says PREEMPTED
      const started = await w.waitFor(/relaunching \(attempt/, { after: preemptedAt, timeoutMs: intervalMs + 120_000 });
      detection.push(started.t - preemptedAt);
      process.stdout.write(`  preemption ${i + 1}: relaunch started ${fmtMs(started.t - preemptedAt)} after it\n`);
      await w.waitFor(/serving again/, { after: started.t, timeoutMs: 300_000 });
    }
    results.add("preemption.detection", "ms", detection, `TPU node PREEMPTED at a random moment → watch's "relaunching" line`, {
      intervalS: opts.intervalS,
    });
    const max = Math.max(...detection);
    results.target(
      `preemption detected within interval + 2 s (${opts.intervalS + 2} s), every run${opts.enforce ? "" : " (smoke: not enforced)"}`,
      max <= intervalMs + 2000,
      `max ${fmtMs(max)}, median ${fmtMs(results.get("preemption.detection")?.summary.median ?? Number.NaN)}`,
    );
  } finally {
    w.child.kill("SIGTERM");
    await w.done;
  }
}

/** RSS in MB of a fresh node process after importing `modules` (and making a TPU client when it is among them). */
function nodeRss(modules: string[]): number {
  const code = [
    ...modules.map((m, i) => `const m${i} = await import(${JSON.stringify(m)});`),
    modules.includes("@google-cloud/tpu")
      ? `new m${modules.indexOf("@google-cloud/tpu")}.v2.TpuClient({ apiEndpoint: "127.0.0.1", port: 1, sslCreds: (await import("google-gax")).grpc.credentials.createInsecure() });`
      : "",
    "process.stdout.write(String(process.memoryUsage().rss / 1048576));",
  ].join("\n");
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], { cwd: repoRoot(), encoding: "utf8" });
  const mb = Number(r.stdout.trim());
  if (r.status !== 0 || !Number.isFinite(mb)) throw new Error(`node -e (${modules.join(", ")}) failed: ${r.stderr}`);
  return mb;
}
