import type { Config } from "../core/config.js";
import type { DeployPlan } from "../core/plan.js";
import type { UpFlags } from "../cli/commands/up.js";
import type { CommandResult, RunContext } from "../cli/program.js";
import { OperationError } from "../errors.js";

export async function runUp(
  _config: Config,
  _plan: DeployPlan,
  _template: { text: string; name: string },
  _opts: UpFlags,
  _args: string[],
  _ctx: RunContext,
): Promise<CommandResult> {
  throw new OperationError("internal", "up without --dry-run is not built yet");
}
