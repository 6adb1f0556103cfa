// `tpu-deploy proxy`: a local endpoint for rank 0's server through SSH (no public port). With
// server.apiKeySecret it is an HTTP proxy that adds the server's API key to requests that lack it.
import { resolveSecrets } from "../adapters/secrets.js";
import { startHttpProxy, startLocalForward } from "../adapters/ssh/forward.js";
import { OperationError } from "../errors.js";
import type { AppContext } from "./context.js";
import { requireReplicas, requireState, sessionsFor } from "./hosts.js";

export interface OpenProxy {
  url: string;
  /** Where it leads, for people: `NAME rank 0 (10.0.0.2:30000)`. */
  target: string;
  close(): Promise<void>;
}

export async function openProxy(ctx: AppContext, name: string, opts: { localPort: number }): Promise<OpenProxy> {
  const state = requireState(ctx, name);
  const rank0 = requireReplicas(state)[0]?.hosts.find((h) => h.rank === 0);
  if (!rank0) throw new OperationError("not_found", `${name} has no rank 0 recorded`);
  const hs = await sessionsFor(ctx, [rank0]);
  const session = hs.sessions.get(rank0.sshAlias);
  if (!session) {
    await hs.close();
    throw new OperationError("ssh_failed", `cannot reach rank 0 (${rank0.sshAlias}): ${hs.unreachable[0]?.message ?? ""}`);
  }
  const keyName = state.config.server.apiKeySecret;
  let apiKey: string | undefined;
  if (keyName) {
    try {
      apiKey = resolveSecrets({ ...state.config, server: { ...state.config.server, secrets: [keyName] } }, ctx.env).get(keyName);
    } catch {
      ctx.report.warn(`${keyName} has no value here: requests through the proxy must send their own Authorization header`);
    }
  }
  const port = state.config.server.port;
  try {
    const target = { session, destHost: rank0.internalIp, destPort: port, localPort: opts.localPort, bindHost: "127.0.0.1" };
    const fwd = apiKey
      ? await startHttpProxy({ ...target, headers: { authorization: `Bearer ${apiKey}` } })
      : await startLocalForward(target);
    return {
      url: `http://127.0.0.1:${fwd.port}`,
      target: `${name} rank 0 (${rank0.internalIp}:${port})`,
      close: async () => {
        await fwd.close();
        await hs.close();
      },
    };
  } catch (err) {
    await hs.close();
    throw err;
  }
}
