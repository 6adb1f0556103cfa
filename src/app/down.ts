// `tpu-deploy down`: stop the servers by their process groups, `sky down`, verify the slice is gone, and
// only then remove the state. A check that could not run keeps the state and fails (not_verified): the
// slice may still bill. Idempotent: what is already gone is reported as such.
import { TEARDOWN_HOLD_MS } from "../core/lock.js";
import type { DeploymentState } from "../core/state.js";
import { OperationError } from "../errors.js";
import type { AppContext } from "./context.js";
import { clusterRefOf } from "./deploy.js";
import { skyRecord } from "./discover.js";
import { sessionsFor } from "./hosts.js";
import { stopServers } from "./start.js";
import { teardownCluster } from "./teardown.js";

export interface DownResult {
  name: string;
  /** Always true here: a teardown that could not be verified fails with not_verified instead. */
  verified: true;
  existed: boolean;
  /** What was checked after the teardown, in words. */
  checked: string[];
  message: string;
}

export async function downDeployment(ctx: AppContext, name: string): Promise<DownResult> {
  const lock = ctx.store.lock(name, "tpu-deploy down", { maxHoldMs: TEARDOWN_HOLD_MS });
  try {
    const state: DeploymentState | undefined = ctx.store.read(name);
    if (!state) {
      // No state: maybe only a cluster of that name, which may not be ours.
      const rec = await skyRecord(ctx, name);
      if (rec) {
        throw new OperationError("not_found", `no tpu-deploy state for ${name}, but SkyPilot has a cluster of that name`, {
          hint: `it may not be ours: sky down ${name} removes it`,
        });
      }
      ctx.store.remove(name);
      return { name, verified: true, existed: false, checked: ["no such cluster in sky status"], message: `${name} is already gone` };
    }
    if (state.hosts.some((h) => h.pgid !== undefined)) {
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
    const r = await teardownCluster(ctx, clusterRefOf(state), { leftovers: "all" });
    if (r.unchecked.length > 0) {
      throw new OperationError(
        "not_verified",
        `${name}: sky down ran, but not everything could be checked; the state is kept.\n  checked: ${r.checked.join("; ")}\n  not checked: ${r.unchecked.join("; ")}`,
        { hint: `fix what kept the check from running, then tpu-deploy down ${name} again (it is idempotent)` },
      );
    }
    ctx.store.remove(name);
    const verified = [...r.checked, ...r.notApplicable.map((n) => `not checked: ${n}`)].join("; ");
    return {
      name,
      verified: true,
      existed: r.existed,
      checked: r.checked,
      message: r.existed ? `${name} is down (verified: ${verified})` : `${name} was already gone (${verified}); state removed`,
    };
  } finally {
    lock.release();
  }
}
