import { appContext } from "../context.js";
import { requireState } from "../../app/hosts.js";
import { watch } from "../../app/watch.js";
import { timerDuration } from "../../core/duration.js";
import { EXIT, UsageError } from "../../errors.js";
import type { CommandResult, RunContext } from "../program.js";
import { printReport, type RelaunchFlags, relaunchOptions, reportJson, targetName } from "./relaunch.js";

export async function watchCommand(opts: RelaunchFlags & { interval?: string }, args: string[], run: RunContext): Promise<CommandResult> {
  const one = targetName(opts, args, "watch");
  const interval = timerDuration(opts.interval ?? "60s");
  if (!interval.ok) throw new UsageError(`--interval '${opts.interval}' ${interval.problem}`);
  if (interval.ms < 1000) throw new UsageError(`--interval '${opts.interval}' is shorter than 1s (examples: 30s, 5m)`);
  const intervalMs = interval.ms;
  const ropts = relaunchOptions(opts);
  const ctx = appContext(run, opts);
  try {
    if (one !== undefined) requireState(ctx, one);
    ctx.report.info(`watching ${one ?? "every deployment"} every ${opts.interval ?? "60s"} (Ctrl-C or SIGTERM stops)`);
    const end = await watch(ctx, {
      ...ropts,
      names: one === undefined ? "all" : [one],
      intervalMs,
      onReport: (r, changed) => {
        // Every action taken, and otherwise only changes: a healthy or busy deployment is one line, not one a minute.
        if (!opts.json && (changed || r.action === "restart" || r.action === "relaunch"))
          printReport(run.io, r, `[${ctx.now().toISOString()}] `);
      },
    });
    const json = end.reports.map(reportJson);
    if (end.stopped === "gave-up")
      return { code: EXIT.gaveUp, json: { code: "gave_up", message: "every watched deployment gave up", results: json } };
    ctx.report.info(end.stopped === "signal" ? "watch stopped" : `${one} no longer exists: watch ends`);
    return { code: 0, json };
  } finally {
    ctx.report.stop();
  }
}
