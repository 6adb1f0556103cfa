// The one probe of whether a replica serves: rank 0's /health (is anything listening), then
// /health_generate (does the model answer: docs/upstream/sglang-jax.md §5), through an SSH tunnel to
// rank 0's internal address. up (nothing to do?), status and relaunch all ask it.
import { httpViaSsh } from "../adapters/ssh/http.js";
import { SshError } from "../errors.js";
import type { HostRecord } from "../core/state.js";
import { type AppContext, interruptedFrom } from "./context.js";
import { sessionsFor } from "./hosts.js";

export type Rank0Health =
  | { kind: "serving" }
  /** /health 200 but /health_generate fails: the engine is wedged (or still warming up). */
  | { kind: "wedged"; status: number }
  /** Rank 0's host answers SSH, but nothing listens on the port (starting, or the server is down). */
  | { kind: "no-listener" }
  /** Rank 0's host cannot be reached over SSH. */
  | { kind: "unreachable"; why: string };

export async function probeRank0(
  ctx: AppContext,
  name: string,
  hosts: readonly HostRecord[],
  port: number,
  opts: { generateTimeoutMs: number; connectTimeoutMs?: number },
): Promise<Rank0Health> {
  const rank0 = hosts.find((h) => h.rank === 0);
  if (!rank0) return { kind: "unreachable", why: "no rank 0 is recorded" };
  const hs = await sessionsFor(ctx, name, [rank0], { timeoutMs: opts.connectTimeoutMs ?? 15_000 });
  try {
    const s = hs.sessions.get(rank0.sshAlias);
    if (!s) return { kind: "unreachable", why: hs.unreachable[0]?.message ?? "no SSH session" };
    const get = (path: string, timeoutMs: number) => httpViaSsh(s, rank0.internalIp, port, { path, timeoutMs, signal: ctx.signal });
    try {
      const h = await get("/health", 5000);
      if (h.status !== 200) return { kind: "wedged", status: h.status };
      const hg = await get("/health_generate", opts.generateTimeoutMs);
      return hg.status === 200 ? { kind: "serving" } : { kind: "wedged", status: hg.status };
    } catch (err) {
      if (ctx.signal.aborted) throw interruptedFrom(ctx.signal);
      if (err instanceof SshError && err.reason === "refused") return { kind: "no-listener" };
      ctx.report.debug(`rank 0 probe: ${(err as Error).message}`);
      return { kind: "unreachable", why: (err as Error).message };
    }
  } finally {
    await hs.close();
  }
}
