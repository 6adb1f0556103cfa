// `tpu-deploy down`: stop the servers by their process groups, `sky down`, verify the slice is gone, and
// only then remove the state. A check that could not run keeps the state and fails (not_verified): the
// slice may still bill. Idempotent: what is already gone is reported as such.
import { TEARDOWN_HOLD_MS } from "../core/lock.js";
import { addEvent, type DeploymentState, type ReplicaState } from "../core/state.js";
import { OperationError, UsageError } from "../errors.js";
import type { AppContext } from "./context.js";
import { assertOwned } from "./ownership.js";
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

/**
 * Takes every replica down (or the one `replica` names): servers stopped, `sky down`, verified. The state
 * goes only when every replica is verified gone; a replica taken down alone leaves the others serving.
 */
export async function downDeployment(
  ctx: AppContext,
  name: string,
  opts: { replica?: number | undefined; force?: boolean | undefined } = {},
): Promise<DownResult> {
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
    const targets = state.replicas.filter((r) => opts.replica === undefined || r.replica === opts.replica);
    if (opts.replica !== undefined && targets.length === 0) {
      throw new UsageError(`${name} has no replica ${opts.replica}`, {
        hint: `its replicas: ${state.replicas.map((r) => r.replica).join(", ")}`,
      });
    }
    // Before anything is stopped: another installation's clusters are not ours to take down.
    await assertOwned(
      ctx,
      name,
      targets.map((r) => r.cluster),
      { force: opts.force, doing: "take it down" },
    );
    const checked: string[] = [];
    const notApplicable = new Set<string>();
    let existed = false;
    for (const r of targets) {
      await stopReplicaServers(ctx, name, r);
      const t = await teardownCluster(ctx, clusterRefOf(state, r), { leftovers: "all" });
      if (t.unchecked.length > 0) {
        throw new OperationError(
          "not_verified",
          `${r.cluster}: sky down ran, but not everything could be checked; the state is kept.\n  checked: ${t.checked.join("; ")}\n  not checked: ${t.unchecked.join("; ")}`,
          { hint: `fix what kept the check from running, then tpu-deploy down ${name} again (it is idempotent)` },
        );
      }
      existed = existed || t.existed;
      checked.push(...t.checked.map((c) => (targets.length > 1 || opts.replica !== undefined ? `${r.cluster}: ${c}` : c)));
      for (const n of t.notApplicable) notApplicable.add(n);
    }
    const left = state.replicas.filter((r) => !targets.includes(r));
    if (left.length === 0) ctx.store.remove(name);
    else ctx.store.write(addEvent({ ...state, replicas: left }, { event: "replica-down", replica: opts.replica }, ctx.now()));
    const verified = [...checked, ...[...notApplicable].map((n) => `not checked: ${n}`)].join("; ");
    const what = opts.replica === undefined ? name : `${name} replica ${opts.replica}`;
    return {
      name,
      verified: true,
      existed,
      checked,
      message: existed
        ? `${what} is down (verified: ${verified})`
        : `${what} was already gone (${verified})${left.length === 0 ? "; state removed" : ""}`,
    };
  } finally {
    lock.release();
  }
}

async function stopReplicaServers(ctx: AppContext, name: string, r: ReplicaState): Promise<void> {
  if (!r.hosts.some((h) => h.pgid !== undefined)) return;
  ctx.report.info(`stopping the servers on ${r.hosts.length} host(s) of ${r.cluster}`);
  // A host whose key changed is left alone (nothing is stopped there); the teardown below removes it anyway.
  const hs = await sessionsFor(ctx, name, r.hosts, { timeoutMs: 10_000, onHostKeyChanged: "skip" });
  try {
    if (hs.unreachable.length > 0) ctx.report.debug(`unreachable: ${hs.unreachable.map((u) => u.host.sshAlias).join(", ")}`);
    const reachable = r.hosts.filter((h) => hs.sessions.has(h.sshAlias));
    await stopServers(hs.sessions, name, reachable, 5).catch((err: Error) => ctx.report.warn(err.message));
  } finally {
    await hs.close();
  }
}
