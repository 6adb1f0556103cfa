// `tpu-deploy down`: stop the servers by their process groups, `sky down`, verify the slice is gone,
// and only then remove the state. Idempotent: what is already gone is reported as such.
import type { Config } from "../core/config.js";
import type { DeploymentState } from "../core/state.js";
import { OperationError } from "../errors.js";
import type { AppContext } from "./context.js";
import { skyRecord } from "./discover.js";
import { sessionsFor } from "./hosts.js";
import { stopServers } from "./servers.js";
import { teardownCluster } from "./teardown.js";

export interface DownResult {
  name: string;
  verified: boolean;
  existed: boolean;
  message: string;
}

export async function downDeployment(ctx: AppContext, name: string, fallbackConfig?: Config): Promise<DownResult> {
  const lock = ctx.store.lock(name, "tpu-deploy down");
  try {
    const state: DeploymentState | undefined = ctx.store.read(name);
    const config = state?.config ?? fallbackConfig;
    if (!config) {
      // No state: maybe only a cluster of that name.
      const rec = await skyRecord(ctx, name);
      if (!rec) {
        ctx.store.remove(name);
        return { name, verified: true, existed: false, message: `${name} is already gone` };
      }
      throw new OperationError("not_found", `no tpu-deploy state for ${name}, but SkyPilot has a cluster of that name`, {
        hint: `it may not be ours: sky down ${name} removes it`,
      });
    }
    if (state?.hosts.some((h) => h.pgid !== undefined)) {
      ctx.report.info(`stopping the servers on ${state.hosts.length} host(s)`);
      const hs = await sessionsFor(ctx, state.hosts, 10_000);
      try {
        if (hs.unreachable.length > 0) ctx.report.debug(`unreachable: ${hs.unreachable.map((u) => u.host.sshAlias).join(", ")}`);
        const reachable = state.hosts.filter((h) => hs.sessions.has(h.sshAlias));
        await stopServers(hs.sessions, name, reachable, 5).catch((err: Error) => ctx.report.warn(err.message));
      } finally {
        await hs.close();
      }
    }
    const r = await teardownCluster(ctx, config, { nameOnCloud: state?.nameOnCloud, zone: state?.zone });
    ctx.store.remove(name);
    return {
      name,
      verified: r.verified,
      existed: r.existed,
      message: r.existed
        ? `${name} is down (verified: gone from sky status and the Cloud TPU API)`
        : `${name} was already gone; state removed`,
    };
  } finally {
    lock.release();
  }
}
