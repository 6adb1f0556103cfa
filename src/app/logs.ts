// `tpu-deploy logs`: each rank's server log from its host, line by line, tagged with the rank.
import { remoteFiles, tailCommand } from "../core/remote.js";
import { UsageError } from "../errors.js";
import type { AppContext } from "./context.js";
import { requireHosts, requireState, sessionsFor } from "./hosts.js";

export interface LogsOptions {
  /** One rank, or all. */
  rank: number | "all";
  follow: boolean;
  tail: number;
  onLine(rank: number, line: string): void;
  onUnreachable(rank: number, why: string): void;
}

export async function readLogs(ctx: AppContext, name: string, opts: LogsOptions): Promise<{ rank: number; lines: string[] }[]> {
  const state = requireState(ctx, name);
  const all = requireHosts(state);
  const which = opts.rank === "all" ? all : all.filter((h) => h.rank === opts.rank);
  if (which.length === 0) throw new UsageError(`--rank ${opts.rank}: ${name} has ranks 0..${all.length - 1}`);
  const hs = await sessionsFor(ctx, which);
  const files = remoteFiles(name);
  try {
    for (const u of hs.unreachable) opts.onUnreachable(u.host.rank, u.message);
    const collected: { rank: number; lines: string[] }[] = [];
    await Promise.all(
      which.map(async (h) => {
        const s = hs.sessions.get(h.sshAlias);
        if (!s) return;
        let partial = "";
        const lines: string[] = [];
        const emit = (chunk: string) => {
          partial += chunk;
          const parts = partial.split("\n");
          partial = parts.pop() ?? "";
          for (const l of parts) {
            lines.push(l);
            opts.onLine(h.rank, l);
          }
        };
        try {
          await s.exec(tailCommand(files, opts.tail, opts.follow), {
            timeoutMs: opts.follow ? 2 ** 31 - 1 : 30_000,
            signal: ctx.signal,
            onStdout: emit,
          });
        } catch (err) {
          if (!ctx.signal.aborted) throw err;
        }
        if (partial) emit("\n");
        collected.push({ rank: h.rank, lines });
      }),
    );
    return collected.sort((a, b) => a.rank - b.rank);
  } finally {
    await hs.close();
  }
}
