// `tpu-deploy schedule`: install or remove the crontab entry or systemd user timer that runs
// `tpu-deploy relaunch NAME`. Uninstalling removes exactly what was installed, recognised by its marker,
// and nothing else of the user's. The text comes from src/core/schedule.ts; every effect goes through Scheduler.
import { join } from "node:path";
import type { Scheduler } from "../adapters/scheduler.js";
import { markerOf, type Schedule, unitNameOf, withEntry, withoutEntry } from "../core/schedule.js";
import { OperationError } from "../errors.js";

export function installCron(scheduler: Scheduler, s: Schedule): void {
  const r = scheduler.readCrontab();
  if (r.kind === "missing")
    throw new OperationError("not_found", "crontab is not installed here", { hint: "install cron, or use --install systemd" });
  if (r.kind === "failed") throw new OperationError("not_found", `crontab -l failed (exit ${r.code}): ${r.stderr.trim()}`);
  scheduler.writeCrontab(withEntry(r.kind === "ok" ? r.text : "", s));
}

/** Whether there was an entry to remove. A crontab that cannot be read holds none of ours. */
export function uninstallCron(scheduler: Scheduler, name: string): boolean {
  const r = scheduler.readCrontab();
  if (r.kind !== "ok") return false;
  const { text, found } = withoutEntry(r.text, name);
  if (found) scheduler.writeCrontab(text);
  return found;
}

export interface SystemdInstall {
  dir: string;
  files: string[];
  /** Set when the user service manager could not be reached: what to run by hand. */
  manual?: string[];
}

export function installSystemd(scheduler: Scheduler, dir: string, s: Schedule): SystemdInstall {
  const files = scheduler.writeUnits(dir, [
    { name: `${s.unitName}.service`, text: s.service },
    { name: `${s.unitName}.timer`, text: s.timer },
  ]);
  const steps: string[][] = [
    ["--user", "daemon-reload"],
    ["--user", "enable", "--now", `${s.unitName}.timer`],
  ];
  for (const args of steps) {
    const r = scheduler.systemctl(args);
    if (r.kind !== "ok") {
      return {
        dir,
        files,
        manual: steps
          .map((a) => `systemctl ${a.join(" ")}`)
          .concat(r.kind === "missing" ? [] : [`# systemctl ${args.join(" ")}: ${(r.stderr.trim().split("\n")[0] ?? "").trim()}`]),
      };
    }
  }
  return { dir, files };
}

/** Removes our unit files (only files that carry our marker) and disables the timer; returns the files removed. */
export function uninstallSystemd(scheduler: Scheduler, dir: string, name: string): string[] {
  const unit = unitNameOf(name);
  const marker = markerOf(name);
  const files = [join(dir, `${unit}.service`), join(dir, `${unit}.timer`)].filter((f) => scheduler.readUnit(f)?.startsWith(marker));
  if (files.length === 0) return [];
  scheduler.systemctl(["--user", "disable", "--now", `${unit}.timer`]);
  scheduler.removeUnits(dir, files);
  scheduler.systemctl(["--user", "daemon-reload"]);
  return files;
}
