import { writeSync } from "node:fs";
import { appContext } from "../context.js";
import { combinedCode, errorReport, type RelaunchOptions, type RelaunchReport, relaunchOne } from "../../app/relaunch.js";
import { timerDuration } from "../../core/duration.js";
import { TpuDeployError, UsageError } from "../../errors.js";
import type { Io, OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export type RelaunchFlags = OutputFlags & {
  all?: boolean;
  reset?: boolean;
  timeout?: string;
  backoff?: string;
  backoffMax?: string;
  force?: boolean;
  /** Where watch reads this run's report (one JSON line), when it runs the check in a child process. */
  reportFd?: number;
};

export async function relaunchCommand(opts: RelaunchFlags, args: string[], run: RunContext): Promise<CommandResult> {
  const one = targetName(opts, args, "relaunch");
  const ropts = relaunchOptions(opts);
  const ctx = appContext(run, opts);
  try {
    if (one !== undefined) {
      let r: RelaunchReport;
      try {
        r = await relaunchOne(ctx, one, ropts);
      } catch (err) {
        if (opts.reportFd !== undefined) writeSync(opts.reportFd, `${JSON.stringify(errorReport(one, err))}\n`);
        throw err;
      }
      if (opts.reportFd !== undefined) writeSync(opts.reportFd, `${JSON.stringify(r)}\n`);
      if (!opts.json) printReport(run.io, r);
      return { code: r.code, json: r.code === 0 ? reportJson(r) : failureJson(r) };
    }
    const reports: RelaunchReport[] = [];
    for (const name of ctx.store.list()) {
      let r: RelaunchReport;
      try {
        r = await relaunchOne(ctx, name, ropts);
      } catch (err) {
        if (err instanceof TpuDeployError && err.code === "interrupted") throw err;
        r = errorReport(name, err);
      }
      reports.push(r);
      if (!opts.json) printReport(run.io, r);
    }
    if (reports.length === 0 && !opts.json) run.io.stdout.write("no deployments\n");
    const code = combinedCode(reports);
    const list = reports.map(reportJson);
    if (code === 0) return { code, json: list };
    const failed = reports.filter((r) => r.code !== 0).length;
    return {
      code,
      json: {
        code: code === 3 ? "partial" : reports.find((r) => r.error)?.error?.code,
        message: `${failed} of ${reports.length} deployment(s) did not end well`,
        results: list,
      },
    };
  } finally {
    ctx.report.stop();
  }
}

export function targetName(opts: { all?: boolean }, args: string[], command: string): string | undefined {
  const name = args[0];
  if (opts.all && name) throw new UsageError(`name a deployment or pass --all, not both`);
  if (!opts.all && !name)
    throw new UsageError(`name the deployment: tpu-deploy ${command} NAME (or --all)`, { hint: "tpu-deploy status lists them" });
  if (args.length > 1) throw new UsageError(`one deployment at a time (got ${args.join(", ")}); --all takes every deployment`);
  return opts.all ? undefined : name;
}

export function relaunchOptions(opts: {
  reset?: boolean;
  timeout?: string;
  backoff?: string;
  backoffMax?: string;
  force?: boolean;
}): RelaunchOptions {
  const ms = (flag: string, v: string | undefined) => {
    if (v === undefined) return undefined;
    const d = timerDuration(v);
    if (!d.ok) throw new UsageError(`${flag} '${v}' ${d.problem}`);
    return d.ms;
  };
  const timeoutMs = ms("--timeout", opts.timeout);
  // Flags override the deployment's relaunch.backoff / relaunch.backoffMax, which override the defaults.
  const baseMs = ms("--backoff", opts.backoff);
  const maxMs = ms("--backoff-max", opts.backoffMax);
  if (baseMs && maxMs && maxMs < baseMs)
    throw new UsageError(`--backoff-max (${opts.backoffMax}) is shorter than --backoff (${opts.backoff})`);
  const policy = { ...(baseMs ? { baseMs } : {}), ...(maxMs ? { maxMs } : {}) };
  return { reset: Boolean(opts.reset), ...(timeoutMs ? { timeoutMs } : {}), policy, force: Boolean(opts.force) };
}

export function reportJson(r: RelaunchReport): Record<string, unknown> {
  return {
    name: r.name,
    verdict: r.verdict,
    action: r.action,
    attempt: r.attempt,
    zone: r.zone,
    nextAttemptAt: r.nextAttemptAt,
    message: r.message,
    ...(r.error ? { error: r.error } : {}),
    replicas: r.replicas.map((x) => ({
      replica: x.replica,
      cluster: x.cluster,
      verdict: x.verdict,
      action: x.action,
      attempt: x.attempt,
      zone: x.zone,
      nextAttemptAt: x.nextAttemptAt,
      message: x.message,
      ...(x.error ? { error: x.error } : {}),
    })),
  };
}

/** The `error` of the --json document: the usual {code, message, hint} plus where the relaunch stands. */
function failureJson(r: RelaunchReport): Record<string, unknown> {
  const { error, message: _m, ...rest } = reportJson(r);
  return { ...(error as object), ...rest };
}

export function printReport(io: Io, r: RelaunchReport, prefix = ""): void {
  if (r.replicas.length > 1) {
    io.stdout.write(`${prefix}${r.name}: ${r.message.split(";")[0]}\n`);
    for (const x of r.replicas) io.stdout.write(`${prefix}  replica ${x.replica} (${x.cluster}): ${x.message}\n`);
  } else {
    io.stdout.write(`${prefix}${r.name}: ${r.message}\n`);
  }
  if (r.code !== 0 && r.error) {
    if (r.error.message !== r.message && !r.message.includes(r.error.message))
      io.stderr.write(`  ${r.error.message.split("\n").join("\n  ")}\n`);
    if (r.error.hint) io.stderr.write(`  hint: ${r.error.hint}\n`);
  }
}
