// `tpu-deploy restart`: stop and start the servers on the hosts the deployment has (no reprovisioning),
// through the same plan and deploy steps as up.
import { resolveSecrets } from "../adapters/secrets.js";
import { OperationError } from "../errors.js";
import type { AppContext } from "./context.js";
import { type DeploySummary, deploy } from "./deploy.js";
import { skyRecord } from "./discover.js";
import { requireState } from "./hosts.js";
import { planFor } from "./up.js";

export async function restart(ctx: AppContext, name: string): Promise<DeploySummary> {
  const state = requireState(ctx, name);
  const secrets = resolveSecrets(state.config, ctx.env);
  const rec = await skyRecord(ctx, name);
  if (rec?.status !== "UP" || state.phase === "launching") {
    throw new OperationError(
      "not_found",
      `${name}'s cluster is ${rec?.status ?? "gone"}; restart only restarts servers on existing hosts`,
      {
        hint: `tpu-deploy relaunch ${name} brings a preempted or deleted cluster back`,
      },
    );
  }
  return await deploy(ctx, state.config, planFor(ctx, state.config, { spot: state.spot }), secrets, {
    keepOnFailure: true,
    forceRestart: true,
  });
}
