import { makeContext } from "../../app/context.js";
import { skyRecord } from "../../app/discover.js";
import { requireState } from "../../app/hosts.js";
import { deploy } from "../../app/up.js";
import { resolveSecrets } from "../../adapters/secrets.js";
import { OperationError, UsageError } from "../../errors.js";
import type { OutputFlags } from "../io.js";
import { loadTemplate } from "../load-spec.js";
import type { CommandResult, RunContext } from "../program.js";

export default async function restart(opts: OutputFlags, args: string[], run: RunContext): Promise<CommandResult> {
  const name = args[0];
  if (!name) throw new UsageError("name the deployment: tpu-deploy restart NAME");
  const ctx = makeContext(run.io, run.signal, opts, run.now);
  try {
    const state = requireState(ctx, name);
    const secrets = resolveSecrets(state.config, ctx.env);
    const rec = await skyRecord(ctx, name);
    if (rec?.status !== "UP" || state.phase === "launching") {
      throw new OperationError(
        "not_found",
        `${name}'s cluster is ${rec?.status ?? "gone"}; restart only restarts servers on existing hosts`,
        {
          hint: `tpu-deploy relaunch ${name} brings a preempted or deleted cluster back`,
        },
      );
    }
    const summary = await deploy(ctx, state.config, loadTemplate(state.config), secrets, {
      recreate: false,
      keepOnFailure: true,
      forceRestart: true,
    });
    if (!opts.json) run.io.stdout.write(`${name} restarted: serving again (rank 0 ${summary.distInitAddr.split(":")[0]})\n`);
    return { code: 0, json: summary };
  } finally {
    await ctx.close();
  }
}
