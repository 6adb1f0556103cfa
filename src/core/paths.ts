// Where tpu-deploy keeps its files. Pure: computes paths from the environment, touches nothing.
import { join } from "node:path";
import { UsageError } from "../errors.js";
import { NAME_PATTERN, NAME_RULE } from "./config.js";

/**
 * A deployment name as every command takes it: the rule `up` uses, checked before the name reaches a
 * path, a marker, a unit name or a log file. JSON-quoted in the message, so a control character shows.
 */
export function checkName(name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new UsageError(`${JSON.stringify(name)} is not a deployment name: ${NAME_RULE}`, {
      hint: "tpu-deploy status lists the deployments",
    });
  }
  return name;
}

export function stateHome(env: NodeJS.ProcessEnv): string {
  if (env.TPU_DEPLOY_HOME) return env.TPU_DEPLOY_HOME;
  return join(env.HOME ?? "/root", ".tpu-deploy");
}
