// The machine a run measured on, and the results block of BENCHMARKS.md, generated from the measurements
// (never written by hand): everything between the two markers is replaced by each full run.
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { cpus, loadavg, release, totalmem } from "node:os";
import { repoRoot } from "../test/sim/sim.js";
import { type Metric, type Results, round } from "./results.js";

export interface Machine {
  nproc: number;
  cpu: string;
  memoryGb: number;
  free: string;
  node: string;
  kernel: string;
  loadavg: number[];
  /** Simulated clouds (test runs, demos, other benchmarks) alive besides this one. */
  otherSims: number;
  summary: string;
}

export function machine(): Machine {
  const run = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8" }).trim();
    } catch {
      return "";
    }
  };
  const nproc = Number(run("nproc", [])) || cpus().length;
  const cpu = cpus()[0]?.model.trim() ?? "unknown";
  const load = loadavg().map((x) => Number(x.toFixed(2)));
  const sims = readdirSync("/tmp").filter((n) => n.startsWith("tpd-sim-") && !n.endsWith(".lock")).length;
  const memoryGb = Math.round(totalmem() / 2 ** 30);
  return {
    nproc,
    cpu,
    memoryGb,
    free: run("free", ["-g"]),
    node: process.version,
    kernel: release(),
    loadavg: load,
    otherSims: sims,
    summary: `${nproc} CPU (${cpu}), ${memoryGb} GB, Node ${process.version}, load average ${load.join(" ")}`,
  };
}

const BEGIN = "<!-- bench:results:begin (written by npm run bench from its measurements; do not edit) -->";
const END = "<!-- bench:results:end -->";

export function replaceBlock(doc: string, block: string): string {
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  const body = `${BEGIN}\n${block.trim()}\n${END}`;
  if (a < 0 || b < a) return `${doc.trimEnd()}\n\n${body}\n`;
  return doc.slice(0, a) + body + doc.slice(b + END.length);
}

export function markdown(results: Results, run: { startedAt: Date; before: Machine; after: Machine; argv: string[] }): string {
  const git = (args: string[]) => {
    try {
      return execFileSync("git", args, { cwd: repoRoot(), encoding: "utf8" }).trim();
    } catch {
      return "";
    }
  };
  const commit = git(["rev-parse", "--short", "HEAD"]);
  const dirty = git(["status", "--porcelain", "--untracked-files=no"]) !== "";
  const minutes = ((Date.now() - run.startedAt.getTime()) / 60_000).toFixed(1);
  const m = run.before;
  const out: string[] = [];
  out.push(
    `Produced by \`npm run bench\` (\`node dist/bench/main.js ${run.argv.join(" ")}\`) at commit ${commit}${dirty ? " plus uncommitted changes" : ""}, ` +
      `started ${run.startedAt.toISOString()}, ${minutes} min.`,
    "",
    `Machine: \`nproc\` ${m.nproc}; CPU ${m.cpu}; Node ${m.node}; Linux ${m.kernel}; \`free -g\`:`,
    "",
    "```",
    m.free,
    "```",
    "",
    `Load average (1, 5, 15 min) ${run.before.loadavg.join(", ")} at the start and ${run.after.loadavg.join(", ")} at the end; ` +
      `other simulated clouds alive on the machine at the start: ${run.before.otherSims}, at the end: ${run.after.otherSims}` +
      (run.before.loadavg[0] !== undefined && run.before.loadavg[0] > m.nproc * 0.5
        ? ". **The machine was busy with other work**: the numbers are upper bounds."
        : "."),
    "",
    "### Targets",
    "",
    "| | target | measured |",
    "|---|---|---|",
    ...results.targets.map(
      (t) =>
        `| ${t.met ? "met" : t.beyondMachine ? "**missed**, beyond this machine" : "**missed**"} | ${t.requirement} | ${t.measured}${t.beyondMachine ? `; ${t.beyondMachine}` : ""} |`,
    ),
    "",
  );
  const sizes = [...new Set(results.metrics.filter((x) => x.name === "coordination.ranksStarted").map((x) => Number(x.params.hosts)))];
  if (sizes.length > 0) {
    const med = (name: string, hosts: number) => results.get(name, { hosts })?.summary.median ?? Number.NaN;
    const range = (name: string, hosts: number) => {
      const s = results.get(name, { hosts })?.summary;
      return s ? `${round(s.median)} (${round(s.min)}–${round(s.max)})` : "–";
    };
    out.push(
      "### Coordination fan-out (ms; median (min–max))",
      "",
      "| hosts | tpu-deploy: known → ranks started | known → serving | sequential ssh: known → ranks started | known → serving | speed-up (ranks started) | floor: all at once, nothing else | SSH connections per host | readiness detection | CPU s of tpu-deploy | peak RSS MB | machine CPU busy, % |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
      ...sizes.map((h) => {
        const conns = results.get("coordination.sshConnectionsPerHost", { hosts: h })?.summary;
        return `| ${h} | ${range("coordination.ranksStarted", h)} | ${range("coordination.serving", h)} | ${range("coordination.baseline.ranksStarted", h)} | ${range("coordination.baseline.serving", h)} | ${(med("coordination.baseline.ranksStarted", h) / med("coordination.ranksStarted", h)).toFixed(1)}× | ${range("coordination.floor.ranksStarted", h)} | ${conns ? `${conns.min}–${conns.max}` : "–"} | ${range("readiness.detection", h)} | ${range("product.up.cpuSeconds", h)} | ${range("product.up.peakRssMb", h)} | ${range("coordination.machineCpuBusy", h)} |`;
      }),
      "",
    );
  }
  out.push(
    "### Every metric",
    "",
    "| metric | | unit | median | min | max | p99 | n | how |",
    "|---|---|---|---|---|---|---|---|---|",
    ...results.metrics.map((x: Metric) => {
      const s = x.summary;
      const params = Object.entries(x.params)
        .map(([k, v]) => `${k}=${v}`)
        .join(" ");
      return `| \`${x.name}\` | ${params} | ${x.unit} | ${round(s.median)} | ${round(s.min)} | ${round(s.max)} | ${s.n >= 100 ? round(s.p99) : ""} | ${s.n} | ${x.how} |`;
    }),
  );
  if (results.notes.length > 0) out.push("", ...results.notes.map((n) => `- ${n}`));
  return out.join("\n");
}
