import { readLogs } from "../../app/logs.js";
import { checkName } from "../../core/paths.js";
import { UsageError } from "../../errors.js";
import { appContext } from "../context.js";
import type { OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export async function logsCommand(
  opts: OutputFlags & { rank?: string; follow?: boolean; tail?: string; replica?: number },
  args: string[],
  run: RunContext,
): Promise<CommandResult> {
  const name = checkName(args[0] ?? "");
  const tail = opts.tail === undefined ? 100 : Number(opts.tail);
  if (!Number.isInteger(tail) || tail < 0) throw new UsageError(`--tail takes a whole number, got ${opts.tail}`);
  const rank = opts.rank === undefined || opts.rank === "all" ? "all" : Number(opts.rank);
  if (rank !== "all" && (!Number.isInteger(rank) || rank < 0)) throw new UsageError(`--rank takes a rank number or all, got ${opts.rank}`);
  const ctx = appContext(run, opts);
  const prefix = (w: { replica: number | undefined; rank: number }) =>
    `[${w.replica === undefined ? "" : `replica ${w.replica} `}rank ${w.rank}]`;
  const logs = await readLogs(ctx, name, {
    replica: opts.replica,
    rank,
    follow: Boolean(opts.follow),
    tail,
    onLine: (w, line) => {
      if (!opts.json) run.io.stdout.write(`${prefix(w)} ${line}\n`);
    },
    onUnreachable: (w, why) => run.io.stderr.write(`${prefix(w)} unreachable: ${why}\n`),
  });
  return { code: 0, json: { name, logs } };
}
