import { makeContext } from "../../app/context.js";
import { requireHosts, requireState, sessionsFor } from "../../app/hosts.js";
import { startHttpProxy, startLocalForward } from "../../adapters/ssh/forward.js";
import { resolveSecrets } from "../../adapters/secrets.js";
import { OperationError, UsageError } from "../../errors.js";
import type { OutputFlags } from "../io.js";
import type { CommandResult, RunContext } from "../program.js";

export async function proxy(opts: OutputFlags & { localPort?: string }, args: string[], run: RunContext): Promise<CommandResult> {
  const name = args[0];
  if (!name) throw new UsageError("name the deployment: tpu-deploy proxy NAME");
  const localPort = opts.localPort === undefined ? 0 : Number(opts.localPort);
  if (!Number.isInteger(localPort) || localPort < 0 || localPort > 65535)
    throw new UsageError(`--local-port must be 0..65535, got ${opts.localPort}`);
  const ctx = makeContext(run.io, run.signal, opts, run.now);
  const state = requireState(ctx, name);
  const rank0 = requireHosts(state).find((h) => h.rank === 0);
  if (!rank0) throw new OperationError("not_found", `${name} has no rank 0 recorded`);
  const hs = await sessionsFor(ctx, [rank0]);
  try {
    const session = hs.sessions.get(rank0.sshAlias);
    if (!session) throw new OperationError("ssh_failed", `cannot reach rank 0 (${rank0.sshAlias}): ${hs.unreachable[0]?.message ?? ""}`);
    // With an API key, an HTTP proxy adds `Authorization: Bearer <key>` to requests that lack it.
    const keyName = state.config.server.apiKeySecret;
    let apiKey: string | undefined;
    if (keyName) {
      try {
        apiKey = resolveSecrets({ ...state.config, server: { ...state.config.server, secrets: [keyName] } }, ctx.env).get(keyName);
      } catch {
        ctx.report.warn(`${keyName} has no value here: requests through the proxy must send their own Authorization header`);
      }
    }
    const target = { session, destHost: rank0.internalIp, destPort: state.config.server.port, localPort, bindHost: "127.0.0.1" };
    const fwd = apiKey
      ? await startHttpProxy({ ...target, headers: { authorization: `Bearer ${apiKey}` } })
      : await startLocalForward(target);
    const url = `http://127.0.0.1:${fwd.port}`;
    // The URL is the result: stdout, once the listener is bound (scripts wait for this line).
    if (opts.json) run.io.stdout.write(`${JSON.stringify({ version: 1, command: "proxy", ok: true, result: { url, name } })}\n`);
    else run.io.stdout.write(`${url}\n`);
    run.io.stderr.write(`forwarding ${url} → ${name} rank 0 (${rank0.internalIp}:${state.config.server.port}); Ctrl-C to stop\n`);
    await new Promise<void>((resolve) => {
      if (run.signal.aborted) resolve();
      run.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await fwd.close();
    return { code: 0 };
  } finally {
    await hs.close();
    await ctx.close();
  }
}
