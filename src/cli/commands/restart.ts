import { restart } from "../../app/restart.js";
import { checkName } from "../../core/paths.js";
import { appContext } from "../context.js";
import type { OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export async function restartCommand(
  opts: OutputFlags & { allAtOnce?: boolean; replica?: number; force?: boolean },
  args: string[],
  run: RunContext,
): Promise<CommandResult> {
  const name = checkName(args[0] ?? "");
  const ctx = appContext(run, opts);
  try {
    const summary = await restart(ctx, name, { allAtOnce: Boolean(opts.allAtOnce), replica: opts.replica, force: Boolean(opts.force) });
    if (!opts.json) run.io.stdout.write(`${name} restarted: ${summary.serving}/${summary.replicas.length} replica(s) serving again\n`);
    return { code: 0, json: summary };
  } finally {
    ctx.report.stop();
  }
}
