import { appContext } from "../context.js";
import { downDeployment, type DownResult } from "../../app/down.js";
import { checkName } from "../../core/paths.js";
import { EXIT, PartialFailureError, TpuDeployError, UsageError } from "../../errors.js";
import type { OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export async function downCommand(
  opts: OutputFlags & { all?: boolean; yes?: boolean; replica?: number; force?: boolean },
  args: string[],
  run: RunContext,
): Promise<CommandResult> {
  const ctx = appContext(run, opts);
  try {
    const names = opts.all ? ctx.store.list() : args;
    if (names.length === 0) {
      if (opts.all) {
        if (!opts.json) run.io.stdout.write("no deployments\n");
        return { code: 0, json: [] };
      }
      throw new UsageError("name a deployment, or pass --all", { hint: "tpu-deploy status lists them" });
    }
    if (opts.replica !== undefined && (opts.all || names.length !== 1)) throw new UsageError("--replica takes exactly one deployment name");
    for (const n of names) checkName(n);
    const what = opts.replica === undefined ? names.join(", ") : `replica ${opts.replica} of ${names[0]}`;
    await ctx.prompt.confirm(`Tear down ${what}? This deletes the TPU slice(s).`, Boolean(opts.yes));
    const results: (DownResult | { name: string; error: string })[] = [];
    for (const name of names) {
      try {
        const r = await downDeployment(ctx, name, { replica: opts.replica, force: opts.force });
        results.push(r);
        if (!opts.json) run.io.stdout.write(`${r.message}\n`);
      } catch (err) {
        if (!opts.all) throw err;
        const message = err instanceof TpuDeployError ? err.message : String(err);
        results.push({ name, error: message });
        run.io.stderr.write(`tpu-deploy down: ${name}: ${message}\n`);
      }
    }
    const failed = results.filter((r) => "error" in r);
    if (opts.all && failed.length > 0) {
      if (failed.length === results.length) {
        return {
          code: EXIT.failed,
          json: { code: "not_verified", message: `none of the ${results.length} deployments was torn down`, results },
        };
      }
      throw new PartialFailureError(
        `${failed.length} of ${results.length} deployments were not torn down`,
        results.map((r) => ({ target: r.name, ok: !("error" in r) })),
      );
    }
    return { code: 0, json: opts.all ? results : results[0] };
  } finally {
    ctx.report.stop();
  }
}
