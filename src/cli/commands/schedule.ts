import { dirname } from "node:path";
import { requireState } from "../../app/hosts.js";
import { installCron, installSystemd, uninstallCron, uninstallSystemd } from "../../app/schedule.js";
import { checkName } from "../../core/paths.js";
import { buildSchedule, checkCron, cronFromEvery, userUnitDir } from "../../core/schedule.js";
import { EXIT, InternalError, OperationError, UsageError } from "../../errors.js";
import type { OutputFlags } from "../io.js";
import { appContext } from "../context.js";
import type { CommandResult, RunContext } from "../program.js";

type ScheduleFlags = OutputFlags & { every?: string; cron?: string; install?: string; uninstall?: boolean; systemd?: boolean };

export async function scheduleCommand(opts: ScheduleFlags, args: string[], run: RunContext): Promise<CommandResult> {
  const name = args[0];
  if (!name) throw new UsageError("name the deployment: tpu-deploy schedule NAME --every 5m");
  checkName(name); // before it reaches the state directory, a marker, a unit name or a log path
  const ctx = appContext(run, opts);
  const out = run.io.stdout;
  const scheduler = ctx.scheduler();
  const unitDir = userUnitDir(ctx.env, ctx.home);
  if (opts.uninstall) {
    if (opts.every || opts.cron || opts.install || opts.systemd)
      throw new UsageError(
        "--uninstall takes no --every, --cron, --install or --systemd: it removes whatever schedule of the deployment is installed",
      );
    const cron = uninstallCron(scheduler, name);
    const units = uninstallSystemd(scheduler, unitDir, name);
    if (!opts.json)
      out.write(
        cron || units.length > 0
          ? `removed the schedule of ${name}:${cron ? " crontab entry" : ""}${units.length > 0 ? ` ${units.join(", ")}` : ""}\n`
          : `no schedule of ${name} is installed\n`,
      );
    return { code: 0, json: { name, removed: { cron, systemd: units } } };
  }
  if (Boolean(opts.every) === Boolean(opts.cron)) throw new UsageError('give one of --every INTERVAL (e.g. 5m) or --cron "EXPR"');
  if (opts.install !== undefined && opts.install !== "cron" && opts.install !== "systemd")
    throw new UsageError(`--install takes cron or systemd, not '${opts.install}'`);
  const cron = opts.every
    ? cronFromEvery(opts.every)
    : checkCron(opts.cron ?? "")
        .map((f) => f.join(","))
        .join(" ");
  requireState(ctx, name); // relaunch finds the secrets file and everything else in it
  if (!ctx.self) throw new InternalError("cannot tell which tpu-deploy is running (no script path in process.argv)");
  const s = buildSchedule({ name, cron, ...ctx.self, env: ctx.env, home: ctx.home });
  scheduler.makeLogDir(dirname(s.logFile));
  const json = {
    name,
    cron,
    cronEntry: s.cronEntry,
    command: s.command,
    logFile: s.logFile,
    systemd: { dir: unitDir, unit: s.unitName, service: s.service, timer: s.timer },
  };

  if (opts.install === "cron") {
    installCron(scheduler, s);
    if (!opts.json) out.write(`installed in your crontab (log: ${s.logFile}):\n${s.marker}\n${s.cronEntry}\n`);
    return { code: 0, json: { ...json, installed: "cron" } };
  }
  if (opts.install === "systemd") {
    const r = installSystemd(scheduler, unitDir, s);
    if (r.manual) {
      const err = new OperationError("not_found", `wrote ${r.files.join(" and ")}, but there is no user service manager to enable them`, {
        hint: `where systemd runs for you, run:\n    ${r.manual.filter((l) => !l.startsWith("#")).join("\n    ")}\n  (and loginctl enable-linger $USER so the timer runs while you are logged out)`,
      });
      if (!opts.json) {
        out.write(`${r.files.join("\n")}\n`);
        run.io.stderr.write(`tpu-deploy schedule: ${err.message}\n  ${err.hint}\n`);
        for (const l of r.manual.filter((x) => x.startsWith("#"))) run.io.stderr.write(`  ${l}\n`);
      }
      return { code: EXIT.failed, json: { code: err.code, message: err.message, hint: err.hint, files: r.files, commands: r.manual } };
    }
    if (!opts.json)
      out.write(
        `installed and started ${s.unitName}.timer (${r.files.join(", ")}; log: ${s.logFile})\nnote: run loginctl enable-linger $USER so it runs while you are logged out\n`,
      );
    return { code: 0, json: { ...json, installed: "systemd", files: r.files } };
  }
  if (!opts.json) {
    out.write(
      opts.systemd
        ? `# ${unitDir}/${s.unitName}.service\n${s.service}\n# ${unitDir}/${s.unitName}.timer\n${s.timer}`
        : `${s.marker}\n${s.cronEntry}\n`,
    );
  }
  return { code: 0, json };
}
