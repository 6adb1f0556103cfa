// `tpu-deploy restart`: stop and start the servers on the hosts the deployment has (no reprovisioning),
// through the same plan and deploy steps as up. Rolling by default: one replica at a time, each serving
// again before the next stops, so a deployment of several replicas never stops serving.
import { resolveSecrets } from "../adapters/secrets.js";
import { OperationError } from "../errors.js";
import type { AppContext } from "./context.js";
import { type DeploySummary, deploy } from "./deploy.js";
import { skyRecord } from "./discover.js";
import { requireState } from "./hosts.js";
import { planFor } from "./up.js";

export async function restart(
  ctx: AppContext,
  name: string,
  opts: { allAtOnce?: boolean; replica?: number | undefined; force?: boolean } = {},
): Promise<DeploySummary> {
  const state = requireState(ctx, name);
  const secrets = resolveSecrets(state.config, ctx.env);
  const replicas = state.replicas.filter((r) => opts.replica === undefined || r.replica === opts.replica);
  if (replicas.length === 0) throw new OperationError("not_found", `${name} has no replica ${opts.replica}`);
  for (const r of replicas) {
    const rec = await skyRecord(ctx, r.cluster);
    if (rec?.status !== "UP" || r.phase === "launching") {
      throw new OperationError("not_found", `${r.cluster} is ${rec?.status ?? "gone"}; restart only restarts servers on existing hosts`, {
        hint: `tpu-deploy relaunch ${name} brings a preempted or deleted cluster back`,
      });
    }
  }
  const run = (only: number[]) =>
    deploy(ctx, state.config, planFor(ctx, state.config, { only }), secrets, {
      keepOnFailure: true,
      forceRestart: true,
      force: opts.force,
    });
  if (opts.allAtOnce || replicas.length === 1) return await run(replicas.map((r) => r.replica));
  let summary: DeploySummary | undefined;
  for (const r of replicas) {
    ctx.report.info(`restarting replica ${r.replica} (${r.cluster}); the others keep serving`);
    summary = await run([r.replica]);
  }
  if (!summary) throw new OperationError("internal", "nothing was restarted");
  return summary;
}
