import { makeContext } from "../../app/context.js";
import { requireHosts, requireState, sessionsFor } from "../../app/hosts.js";
import { remoteFiles, tailCommand } from "../../core/remote.js";
import { UsageError } from "../../errors.js";
import type { OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export default async function logs(
  opts: OutputFlags & { rank?: string; follow?: boolean; tail?: string },
  args: string[],
  run: RunContext,
): Promise<CommandResult> {
  const name = args[0];
  if (!name) throw new UsageError("name the deployment: tpu-deploy logs NAME");
  const tail = opts.tail === undefined ? 100 : Number(opts.tail);
  if (!Number.isInteger(tail) || tail < 0) throw new UsageError(`--tail takes a whole number, got ${opts.tail}`);
  const ctx = makeContext(run.io, run.signal, opts, run.now);
  const state = requireState(ctx, name);
  const all = requireHosts(state);
  const which = opts.rank === undefined || opts.rank === "all" ? all : all.filter((h) => String(h.rank) === opts.rank);
  if (which.length === 0) throw new UsageError(`--rank ${opts.rank}: ${name} has ranks 0..${all.length - 1}`);
  const hs = await sessionsFor(ctx, which);
  const files = remoteFiles(name);
  try {
    for (const u of hs.unreachable) run.io.stderr.write(`[rank ${u.host.rank}] unreachable: ${u.message}\n`);
    const collected: { rank: number; lines: string[] }[] = [];
    await Promise.all(
      which.map(async (h) => {
        const s = hs.sessions.get(h.sshAlias);
        if (!s) return;
        const prefix = `[rank ${h.rank}] `;
        let partial = "";
        const lines: string[] = [];
        const emit = (chunk: string) => {
          partial += chunk;
          const parts = partial.split("\n");
          partial = parts.pop() ?? "";
          for (const l of parts) {
            lines.push(l);
            if (!opts.json) run.io.stdout.write(`${prefix}${l}\n`);
          }
        };
        try {
          await s.exec(tailCommand(files, tail, Boolean(opts.follow)), {
            timeoutMs: opts.follow ? 2 ** 31 - 1 : 30_000,
            signal: run.signal,
            onStdout: emit,
          });
        } catch (err) {
          if (!run.signal.aborted) throw err;
        }
        if (partial) emit("\n");
        collected.push({ rank: h.rank, lines });
      }),
    );
    return { code: 0, json: { name, logs: collected.sort((a, b) => a.rank - b.rank) } };
  } finally {
    await hs.close();
    await ctx.close();
  }
}
