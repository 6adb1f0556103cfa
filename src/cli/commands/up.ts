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
  OutputFlags & {
    dryRun?: boolean;
    timeout?: string;
    recreate?: boolean;
    force?: boolean;
    keepOnFailure?: boolean;
    downOnInterrupt?: boolean;
    minReady?: number;
    yes?: boolean;
  };

export async function upCommand(opts: UpFlags, _args: string[], run: RunContext): Promise<CommandResult> {
  const config = loadSpec(opts, run.io);
  const timeout = opts.timeout === undefined ? undefined : timerDuration(opts.timeout);
  if (timeout && !timeout.ok) throw new UsageError(`--timeout '${opts.timeout}' ${timeout.problem}`);
  const timeoutMs = timeout?.ok ? timeout.ms : undefined;
  const ctx = appContext(run, opts);
  const plan = planFor(ctx, config);
  for (const w of plan.warnings) ctx.report.warn(w);
  if (opts.minReady !== undefined && opts.minReady > config.replicas) {
    throw new UsageError(`--min-ready ${opts.minReady} is more than the ${config.replicas} replica(s) of ${config.name}`);
  }
  if (opts.dryRun) {
    if (!opts.json) printPlan(run.io, plan);
    return { code: 0, json: { dryRun: true, layout: plan.layout, plan } };
  }
  ctx.report.info(`${config.name}: ${plan.layout}`);
  try {
    const summary = await up(ctx, config, plan, {
      timeoutMs,
      timeoutText: opts.timeout,
      recreate: Boolean(opts.recreate),
      force: Boolean(opts.force),
      keepOnFailure: Boolean(opts.keepOnFailure),
      downOnInterrupt: Boolean(opts.downOnInterrupt),
      minReady: opts.minReady,
      yes: Boolean(opts.yes),
    });
    ctx.report.stop();
    if (!opts.json) printSummary(run.io, summary);
    return { code: 0, json: { ...summary } };
  } finally {
    ctx.report.stop();
  }
}

/** The dry run for people: the plan `up` would execute, section by section. */
function printPlan(io: Io, plan: DeployPlan): void {
  const out = io.stdout;
  const [first] = plan.replicas;
  const launch = first?.launches[0];
  if (!first || !launch) return;
  out.write(`# ${plan.name}: ${plan.layout}\n`);
  out.write(`# --nnodes ${plan.hosts}, --tp-size ${plan.tpSize}, ${first.spot ? "spot" : "on-demand"}\n`);
  out.write(`# --- sky.yaml of ${first.cluster} (${plan.template}) ---\n${launch.taskYaml}`);
  for (const r of plan.replicas) {
    const l = r.launches[0];
    if (!l) continue;
    out.write(
      `# --- sky launch of ${r.cluster}, first zone of ${r.launches.map((x) => x.zone).join(", ")} ---\n${commandLine(["sky", ...l.skyArgv])}\n`,
    );
  }
  out.write(
    `# --- ranks${plan.replicas.length > 1 ? " (in each replica)" : ""}: rank = TPU worker number; --dist-init-addr = rank 0's internal IPv4 ---\n`,
  );
  for (const k of first.ranks) out.write(`rank ${k.rank}  <${k.host}>\n  ${commandLine(k.argv)}\n`);
  if (plan.secrets.length > 0) {
    out.write(
      `# --- secrets of every server (names; values go to each host over SSH stdin, never through sky): ${plan.secrets.join(", ")}\n`,
    );
  }
}

function printSummary(io: Io, s: DeploySummary): void {
  const out = io.stdout;
  const many = s.replicas.length > 1;
  out.write(
    many
      ? `${s.name} is serving on ${s.serving}/${s.replicas.length} replicas: ${s.layout}\n`
      : `${s.name} is serving ${s.accelerator}${s.spot ? " (spot)" : ""} in ${s.zone}\n`,
  );
  out.write(`  reach it:   ${s.endpoint.proxy}   (then http://127.0.0.1:<port>/v1/chat/completions)\n`);
  for (const url of s.endpoint.public ?? []) out.write(`  public:     ${url}\n`);
  for (const r of s.replicas) {
    if (many) out.write(`  replica ${r.replica}: ${r.cluster} in ${r.zone}${r.spot ? " (spot)" : ""}, ${r.phase}\n`);
    if (r.distInitAddr) out.write(`  rendezvous: --dist-init-addr ${r.distInitAddr}\n`);
    out.write("  RANK  WORKER  INTERNAL         EXTERNAL         SSH\n");
    for (const h of r.hosts) {
      out.write(
        `  ${String(h.rank).padEnd(4)}  ${String(h.workerId).padEnd(6)}  ${h.internalIp.padEnd(15)}  ${h.externalIp.padEnd(15)}  ${h.sshHost}\n`,
      );
    }
  }
  const t = s.timings;
  const parts = [
    t.launchMs !== undefined ? `launch ${formatDuration(t.launchMs)}` : undefined,
    t.readyMs !== undefined ? `start→serving ${formatDuration(t.readyMs)}` : undefined,
    t.totalMs !== undefined ? `total ${formatDuration(t.totalMs)}` : undefined,
  ].filter(Boolean);
  if (parts.length > 0) out.write(`  timings:    ${parts.join(", ")}${many ? " (replica 0)" : ""}\n`);
}
