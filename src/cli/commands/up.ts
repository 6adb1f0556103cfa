import type { DeploySummary } from "../../app/deploy.js";
import { planFor, up } from "../../app/up.js";
import { formatDuration, timerDuration } from "../../core/duration.js";
import { commandLine, type DeployPlan } from "../../core/plan.js";
import { UsageError } from "../../errors.js";
import type { SpecFlags } from "../config-flags.js";
import { appContext } from "../context.js";
import type { Io, OutputFlags } from "../io.js";
import { loadSpec } from "../load-spec.js";
import type { CommandResult, RunContext } from "../program.js";

export type UpFlags = SpecFlags &
  OutputFlags & { dryRun?: boolean; timeout?: string; recreate?: boolean; keepOnFailure?: boolean; yes?: boolean };

export async function upCommand(opts: UpFlags, _args: string[], run: RunContext): Promise<CommandResult> {
  const config = loadSpec(opts, run.io);
  const timeout = opts.timeout === undefined ? undefined : timerDuration(opts.timeout);
  if (timeout && !timeout.ok) throw new UsageError(`--timeout '${opts.timeout}' ${timeout.problem}`);
  const timeoutMs = timeout?.ok ? timeout.ms : undefined;
  const ctx = appContext(run, opts);
  const plan = planFor(ctx, config);
  for (const w of plan.warnings) ctx.report.warn(w);
  if (opts.dryRun) {
    if (!opts.json) printPlan(run.io, plan);
    return { code: 0, json: { dryRun: true, plan } };
  }
  try {
    const summary = await up(ctx, config, plan, {
      timeoutMs,
      timeoutText: opts.timeout,
      recreate: Boolean(opts.recreate),
      keepOnFailure: Boolean(opts.keepOnFailure),
      yes: Boolean(opts.yes),
    });
    ctx.report.stop();
    if (!opts.json) printSummary(run.io, summary);
    return { code: 0, json: summary };
  } finally {
    ctx.report.stop();
  }
}

/** The dry run for people: the plan `up` would execute, section by section. */
function printPlan(io: Io, plan: DeployPlan): void {
  const out = io.stdout;
  for (const r of plan.replicas) {
    const first = r.launches[0];
    if (!first) continue;
    out.write(
      `# ${plan.name}: ${plan.slices} x ${plan.accelerator} = ${plan.hosts} host(s), tp-size ${plan.tpSize}, ${r.spot ? "spot" : "on-demand"}\n`,
    );
    out.write(`# --- sky.yaml (${plan.template}) ---\n${first.taskYaml}`);
    out.write(
      `# --- sky launch, first zone of ${r.launches.map((l) => l.zone).join(", ")} ---\n${commandLine(["sky", ...first.skyArgv])}\n`,
    );
    out.write(`# --- ranks: rank = slice offset + TPU worker number; --dist-init-addr = rank 0's internal IPv4 ---\n`);
    for (const k of r.ranks) out.write(`rank ${k.rank}  slice ${k.slice} worker ${k.workerId}  <${k.host}>\n  ${commandLine(k.argv)}\n`);
  }
  if (plan.secrets.length > 0) {
    out.write(
      `# --- secrets of every server (names; values go to each host over SSH stdin, never through sky): ${plan.secrets.join(", ")}\n`,
    );
  }
}

function printSummary(io: Io, s: DeploySummary): void {
  const out = io.stdout;
  out.write(`${s.name} is serving ${s.accelerator}${s.spot ? " (spot)" : ""} in ${s.zone}\n`);
  out.write(`  reach it:   ${s.endpoint.proxy}   (then http://127.0.0.1:<port>/v1/chat/completions)\n`);
  if (s.endpoint.public) out.write(`  public:     ${s.endpoint.public}\n`);
  out.write(`  rendezvous: --dist-init-addr ${s.distInitAddr}\n`);
  out.write("  RANK  SLICE  WORKER  INTERNAL         EXTERNAL         SSH\n");
  for (const h of s.hosts) {
    out.write(
      `  ${String(h.rank).padEnd(4)}  ${String(h.slice).padEnd(5)}  ${String(h.workerId).padEnd(6)}  ${h.internalIp.padEnd(15)}  ${h.externalIp.padEnd(15)}  ${h.sshHost}\n`,
    );
  }
  const t = s.timings;
  const parts = [
    t.launchMs !== undefined ? `launch ${formatDuration(t.launchMs)}` : undefined,
    t.readyMs !== undefined ? `start→serving ${formatDuration(t.readyMs)}` : undefined,
    t.totalMs !== undefined ? `total ${formatDuration(t.totalMs)}` : undefined,
  ].filter(Boolean);
  if (parts.length > 0) out.write(`  timings:    ${parts.join(", ")}\n`);
}
