// `npm run bench --smoke` in CI: the benchmark suite itself can rot (a progress line renamed, a sim record
// moved, a metric silently dropped) without any product test noticing, and then the one full run that matters
// fails after half an hour. This runs the built benchmark once on small sizes and checks that it still
// measures all eight kinds of metric the issue asks for, each with a finite number. Targets are not checked
// here (the smoke run does not enforce them: one iteration on small sizes proves nothing about them), but
// every target must still be evaluated and named.
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../sim/sim.js";

// The eight kinds, each with the metric names that stand for it in bench/*.ts.
const KINDS: Record<string, string[]> = {
  "coordination fan-out": [
    "coordination.ranksStarted",
    "coordination.serving",
    "coordination.baseline.ranksStarted",
    "coordination.baseline.serving",
    "coordination.floor.ranksStarted",
    "coordination.sshConnectionsPerHost",
    "coordination.machineCpuBusy",
  ],
  "readiness detection": ["readiness.detection"],
  "preemption detection": ["preemption.detection"],
  "CLI start-up": ["startup.node", "startup.help", "startup.dryRun"],
  memory: ["product.up.peakRssMb", "memory.watchIdle.peakRssMb"],
  "relaunch on a healthy deployment": [
    "relaunchHealthy.wall",
    "relaunchHealthy.skyLaunch",
    "relaunchHealthy.skyStatus",
    "relaunchHealthy.tpuReads",
    "relaunchHealthy.tpuWrites",
    "relaunchHealthy.healthProbes",
  ],
  proxy: [
    "proxy.latency.direct",
    "proxy.latency.proxied",
    "proxy.latency.addedMedian",
    "proxy.latency.addedP99",
    "proxy.throughput.oneReplica",
    "proxy.throughput.twoReplicas",
    "proxy.throughput.ratio",
  ],
  "product cost": ["product.up.cpuSeconds", "product.up.peakRssMb"],
};

// The smoke run must stay cheap enough for every CI run on a 2-core machine.
const BUDGET_MS = 180_000;

interface Doc {
  metrics: { name: string; params: Record<string, unknown>; values: number[]; summary: { median: number; min: number; max: number } }[];
  targets: { requirement: string; met: boolean; measured: string }[];
  machine: { before: { nproc: number; memoryGb: number; node: string } };
}

let dir = "";
let run: { code: number | null; output: string; ms: number };
let doc: Doc | undefined;

beforeAll(async () => {
  const main = join(repoRoot(), "dist", "bench", "main.js");
  if (!existsSync(main)) throw new Error(`${main} is missing: run npm run build first (npm test does)`);
  dir = await mkdtemp(join(tmpdir(), "tpd-bench-smoke-"));
  const json = join(dir, "bench.json");
  const t0 = Date.now();
  run = await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [main, "--smoke", "--json", json], { cwd: repoRoot(), stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (output += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (output += d));
    // Past the budget the run is a failure anyway; SIGINT lets the benchmark stop its simulated cloud.
    const timer = setTimeout(() => child.kill("SIGINT"), BUDGET_MS);
    child.once("error", reject);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output, ms: Date.now() - t0 });
    });
  });
  if (existsSync(json)) doc = JSON.parse(readFileSync(json, "utf8")) as Doc;
}, BUDGET_MS + 30_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("npm run bench -- --smoke", () => {
  it("exits 0 within the CI budget and writes its JSON", () => {
    expect(run.code, run.output.slice(-4000)).toBe(0);
    expect(run.ms).toBeLessThan(BUDGET_MS);
    expect(doc, run.output.slice(-4000)).toBeDefined();
  });

  it.each(Object.entries(KINDS))("measures %s, every value a finite number", (_kind, names) => {
    for (const name of names) {
      const series = doc?.metrics.filter((m) => m.name === name) ?? [];
      expect(series.length, `${name} missing from the smoke run's metrics`).toBeGreaterThan(0);
      for (const m of series) {
        const failed = (doc?.targets ?? []).filter((t) => !t.met && / completed$/.test(t.requirement)).map((t) => t.measured);
        expect(m.values.length, `${name} has no values ${failed.join("; ")}`).toBeGreaterThan(0);
        for (const v of [...m.values, m.summary.median, m.summary.min, m.summary.max])
          expect(Number.isFinite(v), `${name} ${JSON.stringify(m.params)}: ${v}`).toBe(true);
      }
    }
  });

  it("evaluates every target the full run enforces, and records the machine", () => {
    const requirements = doc?.targets.map((t) => t.requirement) ?? [];
    for (const re of [
      /within 3× of/,
      /at least 10× faster than one ssh per host/,
      /exactly one SSH connection per host/,
      /readiness detected within 1 s/,
      /preemption detected within interval \+ 2 s/,
      /--help at most 2\.5×/,
      /--dry-run at most 4×/,
      /peak RSS of up coordinating \d+ hosts under 200 MB/,
      /watch idle under 100 MB/,
      /no sky launch, no TPU API writes/,
      /one sky status or one TPU API read, one health probe/,
      /proxy adds under 2 ms/,
      /two replicas at least 1\.8×/,
    ])
      expect(
        requirements.some((r) => re.test(r)),
        `no target matching ${re}`,
      ).toBe(true);
    for (const t of doc?.targets ?? []) expect(typeof t.met).toBe("boolean");
    expect(doc?.machine.before.nproc).toBeGreaterThan(0);
    expect(doc?.machine.before.memoryGb).toBeGreaterThan(0);
    expect(doc?.machine.before.node).toBe(process.version);
  });
});
