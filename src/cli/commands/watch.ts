import { spawn } from "node:child_process";
import { basename } from "node:path";
import { appContext } from "../context.js";
import { requireState } from "../../app/hosts.js";
import { errorReport, type RelaunchReport } from "../../app/relaunch.js";
import { watch } from "../../app/watch.js";
import { timerDuration } from "../../core/duration.js";
import { EXIT, OperationError, UsageError } from "../../errors.js";
import type { Io } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";
import { printReport, type RelaunchFlags, relaunchOptions, targetName, reportJson } from "./relaunch.js";

type WatchFlags = RelaunchFlags & { interval?: string };

export async function watchCommand(opts: WatchFlags, args: string[], run: RunContext): Promise<CommandResult> {
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
    const self = ctx.self;
    const end = await watch(ctx, {
      ...ropts,
      names: one === undefined ? "all" : [one],
      intervalMs,
      // Run as tpu-deploy's own bin (not in-process under a test runner): each check in a child process.
      ...(self && basename(self.bin) === "tpu-deploy.js" ? { check: childCheck(run.io, self, opts, ctx.signal) } : {}),
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

/**
 * One check as `tpu-deploy relaunch NAME --report-fd 3` in a child process: the same code cron runs, its
 * progress on our stderr, its report read from fd 3. The child loads ssh2, gRPC and the Cloud TPU client and
 * exits; watch, idle between checks, holds none of them. SIGTERM/Ctrl-C reach the child, which cleans up as
 * an interrupted relaunch does, and watch waits for it.
 */
function childCheck(
  io: Io,
  self: { node: string; bin: string },
  opts: WatchFlags,
  signal: AbortSignal,
): (name: string) => Promise<RelaunchReport> {
  const flags = [
    ...(opts.timeout ? ["--timeout", opts.timeout] : []),
    ...(opts.backoff ? ["--backoff", opts.backoff] : []),
    ...(opts.backoffMax ? ["--backoff-max", opts.backoffMax] : []),
    ...(opts.force ? ["--force"] : []),
    ...(opts.quiet || opts.json ? ["--quiet"] : []),
    ...(opts.verbose ? ["--verbose"] : []),
  ];
  return (name) =>
    new Promise((resolve) => {
      const child = spawn(self.node, [self.bin, "relaunch", name, "--report-fd", "3", ...flags], {
        env: io.env,
        cwd: io.cwd,
        stdio: ["ignore", "ignore", "pipe", "pipe"],
        // Its own process group: a terminal's Ctrl-C reaches watch alone, which passes one SIGTERM on (the child
        // would take a second signal as "quit at once" and skip its cleanup).
        detached: true,
      });
      const stop = () => child.kill("SIGTERM");
      signal.addEventListener("abort", stop, { once: true });
      child.stderr?.on("data", (d: Buffer) => io.stderr.write(d.toString()));
      let report = "";
      child.stdio[3]?.on("data", (d: Buffer) => {
        report += d.toString();
      });
      const failed = (why: string) =>
        errorReport(name, new OperationError("internal", `tpu-deploy relaunch ${name} ${why} without a report`));
      child.on("error", (err) => {
        signal.removeEventListener("abort", stop);
        resolve(failed(`could not start (${err.message})`));
      });
      child.on("close", (code, sig) => {
        signal.removeEventListener("abort", stop);
        const line = report.trim().split("\n").at(-1);
        if (!line) return resolve(failed(`exited ${code ?? sig}`));
        try {
          resolve(JSON.parse(line) as RelaunchReport);
        } catch {
          resolve(failed(`exited ${code ?? sig}`));
        }
      });
    });
}
