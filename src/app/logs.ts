// `tpu-deploy logs`: each rank's server log from its host, line by line, tagged with the rank. Secrets are
// redacted again here (the host's log is filtered as it is written; a log from an older start may not be):
// every value known here, and any api_key field sglang-jax prints.
import { redactableSecrets } from "../adapters/secrets.js";
import { streamRedactor } from "../core/redact.js";
import { remoteFiles, tailCommand } from "../core/remote.js";
import { UsageError } from "../errors.js";
import type { AppContext } from "./context.js";
import { requireReplicas, requireState, sessionsFor } from "./hosts.js";

export interface LogsOptions {
  /** One replica, or every one. */
  replica?: number | undefined;
  /** One rank, or all. */
  rank: number | "all";
  follow: boolean;
  tail: number;
  /** `replica` is there when the deployment has several. */
  onLine(where: { replica: number | undefined; rank: number }, line: string): void;
  onUnreachable(where: { replica: number | undefined; rank: number }, why: string): void;
}

export async function readLogs(
  ctx: AppContext,
  name: string,
  opts: LogsOptions,
): Promise<{ replica: number; rank: number; lines: string[] }[]> {
  const state = requireState(ctx, name);
  const replicas = requireReplicas(state, opts.replica);
  const tagged = state.replicas.length > 1;
  const all = replicas.flatMap((r) => r.hosts.map((h) => ({ ...h, replica: r.replica })));
  const which = opts.rank === "all" ? all : all.filter((h) => h.rank === opts.rank);
  if (which.length === 0) throw new UsageError(`--rank ${opts.rank}: ${name} has ranks 0..${Math.max(...all.map((h) => h.rank))}`);
  const secrets = redactableSecrets(state.config, ctx.env);
  const hs = await sessionsFor(ctx, name, which);
  const files = remoteFiles(name);
  try {
    const where = (h: { replica: number; rank: number }) => ({ replica: tagged ? h.replica : undefined, rank: h.rank });
    for (const u of hs.unreachable) {
      const h = which.find((x) => x.sshAlias === u.host.sshAlias);
      if (h) opts.onUnreachable(where(h), u.message);
    }
    const collected: { replica: number; rank: number; lines: string[] }[] = [];
    await Promise.all(
      which.map(async (h) => {
        const s = hs.sessions.get(h.sshAlias);
        if (!s) return;
        let partial = "";
        const lines: string[] = [];
        const redact = streamRedactor(secrets);
        const emit = (text: string) => {
          partial += text;
          const parts = partial.split("\n");
          partial = parts.pop() ?? "";
          for (const l of parts) {
            lines.push(l);
            opts.onLine(where(h), l);
          }
        };
        try {
          await s.exec(tailCommand(files, opts.tail, opts.follow), {
            timeoutMs: opts.follow ? 2 ** 31 - 1 : 30_000,
            signal: ctx.signal,
            onStdout: (chunk) => emit(redact.push(chunk)),
          });
        } catch (err) {
          if (!ctx.signal.aborted) throw err;
        }
        emit(redact.end());
        if (partial) emit("\n");
        collected.push({ replica: h.replica, rank: h.rank, lines });
      }),
    );
    return collected.sort((a, b) => a.replica - b.replica || a.rank - b.rank);
  } finally {
    await hs.close();
  }
}
