// `tpu-deploy up`: plan (the same plan `--dry-run` prints), then deploy it, bounded by --timeout.
import { resolveSecrets } from "../adapters/secrets.js";
import type { Config } from "../core/config.js";
import { type DeployPlan, planDeploy } from "../core/plan.js";
import { ConfigError, OperationError, TpuDeployError } from "../errors.js";
import { type AppContext, withSignal } from "./context.js";
import { type DeployOptions, type DeploySummary, deploy } from "./deploy.js";

/** The plan of a config, with this machine's task path and the config's template. */
export function planFor(
  ctx: AppContext,
  config: Config,
  overrides: { zones?: string[]; spot?: boolean; only?: number[] } = {},
): DeployPlan {
  const planned = planDeploy(config, ctx.template(config), {
    taskPath: (r) => ctx.store.taskPath(config.name, r),
    owner: ctx.store.installationId(),
    ...overrides,
  });
  if (!planned.ok) throw new ConfigError(planned.errors.map((message) => ({ path: "template", message })));
  return planned.plan;
}

export interface UpOptions extends DeployOptions {
  /** How the timeout (timeoutMs: bounds the whole run) was written, for its message. */
  timeoutText?: string | undefined;
}

export async function up(ctx: AppContext, config: Config, plan: DeployPlan, opts: UpOptions = {}): Promise<DeploySummary> {
  const secrets = resolveSecrets(config, ctx.env); // exit 2 before anything is launched
  const timeout = opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined;
  const runCtx = timeout ? withSignal(ctx, AbortSignal.any([ctx.signal, timeout])) : ctx;
  try {
    return await deploy(runCtx, config, plan, secrets, opts);
  } catch (err) {
    if (timeout?.aborted && !ctx.signal.aborted && !(err instanceof TpuDeployError && err.code !== "interrupted")) {
      throw new OperationError("readiness_timeout", `up did not finish within --timeout ${opts.timeoutText ?? ""}`.trim(), {
        hint: "raise --timeout; a cold start can take 30+ minutes",
        cause: err,
      });
    }
    throw err;
  }
}
