// `tpu-deploy watch`: the relaunch check in a loop in the foreground (systemd, a terminal), one lock per
// pass, until SIGTERM or Ctrl-C.
import { EXIT } from "../errors.js";
import { type AppContext, sleep } from "./context.js";
import { errorReport, type RelaunchOptions, type RelaunchReport, relaunchOne } from "./relaunch.js";

export interface WatchOptions extends RelaunchOptions {
  names: string[] | "all";
  intervalMs: number;
  onReport(r: RelaunchReport, changed: boolean): void;
  /**
   * Runs one check; relaunchOne in this process by default. The CLI runs each check in a child process, so
   * the libraries a check loads (ssh2, gRPC, the Cloud TPU client) are not held while watch waits.
   */
  check?: (name: string) => Promise<RelaunchReport>;
}

/**
 * The relaunch check in a loop, one lock per pass. Stops when the run's signal aborts (SIGTERM/SIGINT):
 * an attempt under way cleans up through deploy()'s own interrupt path and records the attempt as
 * interrupted, so the next run (cron, or watch again) finishes the job. Returns the last reports.
 */
export async function watch(
  ctx: AppContext,
  opts: WatchOptions,
): Promise<{ reports: RelaunchReport[]; stopped: "signal" | "gave-up" | "gone" }> {
  const check = opts.check ?? ((name: string) => relaunchOne(ctx, name, opts));
  const last = new Map<string, string>();
  let reports: RelaunchReport[] = [];
  for (let pass = 0; ; pass++) {
    const names = opts.names === "all" ? ctx.store.list() : opts.names;
    reports = [];
    for (const name of names) {
      if (ctx.signal.aborted) return { reports, stopped: "signal" };
      let r: RelaunchReport;
      try {
        r = await check(name);
      } catch (err) {
        if (ctx.signal.aborted) return { reports, stopped: "signal" };
        r = errorReport(name, err);
      }
      reports.push(r);
      const key = `${r.verdict}/${r.action}/${r.code}/${r.nextAttemptAt}`;
      opts.onReport(r, last.get(name) !== key);
      last.set(name, key);
    }
    if (opts.names !== "all") {
      if (reports.length > 0 && reports.every((r) => r.action === "gave-up" || r.code === EXIT.gaveUp))
        return { reports, stopped: "gave-up" };
      // A deployment torn down with `down` while watched: nothing left to watch.
      if (pass > 0 && reports.length > 0 && reports.every((r) => r.error?.code === "not_found")) return { reports, stopped: "gone" };
    }
    try {
      await sleep(opts.intervalMs, ctx.signal);
    } catch {
      return { reports, stopped: "signal" };
    }
  }
}
