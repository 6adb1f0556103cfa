import { appContext } from "../context.js";
import { findGarbage, type GcItem, removeGarbage } from "../../app/gc.js";
import { EXIT, PartialFailureError } from "../../errors.js";
import type { Io, OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export async function gcCommand(
  opts: OutputFlags & { dryRun?: boolean; yes?: boolean; force?: boolean },
  _args: string[],
  run: RunContext,
): Promise<CommandResult> {
  const ctx = appContext(run, opts);
  try {
    const { found, skipped } = await findGarbage(ctx, { force: Boolean(opts.force) });
    if (!opts.json) {
      printItems(run.io, found, opts.dryRun ? "would remove" : "found");
      for (const i of skipped) run.io.stdout.write(`  skipped ${i.kind} ${i.name}: ${i.why}\n`);
    }
    if (found.length === 0 || opts.dryRun) return { code: 0, json: { dryRun: Boolean(opts.dryRun), found, skipped, removed: [] } };
    await ctx.prompt.confirm(`Remove these ${found.length} item(s)? Clusters and TPU nodes are deleted.`, Boolean(opts.yes));
    const removed = await removeGarbage(ctx, found);
    const failed = removed.filter((i) => !i.removed);
    if (!opts.json) {
      for (const i of removed)
        run.io.stdout.write(i.removed ? `removed ${i.kind} ${i.name}\n` : `not removed: ${i.kind} ${i.name}: ${i.error}\n`);
    }
    if (failed.length === 0) return { code: 0, json: { dryRun: false, found, skipped, removed } };
    if (failed.length === removed.length)
      return {
        code: EXIT.failed,
        json: { code: "not_verified", message: `none of the ${removed.length} item(s) could be removed`, found, removed },
      };
    const e = new PartialFailureError(
      `${failed.length} of ${removed.length} item(s) were not removed`,
      removed.map((i) => ({ target: i.name, ok: Boolean(i.removed), ...(i.error ? { message: i.error } : {}) })),
    );
    return { code: e.exitCode, json: { code: e.code, message: e.message, found, removed } };
  } finally {
    ctx.report.stop();
  }
}

function printItems(io: Io, items: GcItem[], verb: string): void {
  if (items.length === 0) {
    io.stdout.write("nothing to clean up: every cluster, TPU node and state file of tpu-deploy has an owner\n");
    return;
  }
  io.stdout.write(`${verb} ${items.length} item(s) nobody owns:\n`);
  for (const i of items) io.stdout.write(`  ${i.kind.padEnd(8)}  ${i.name}\n            ${i.why}\n`);
}
