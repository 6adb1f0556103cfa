// Where tpu-deploy keeps its files. Pure: computes paths from the environment, touches nothing.
import { join } from "node:path";
import { UsageError } from "../errors.js";
import { NAME_PATTERN } from "./config.js";

/** A deployment name as every command takes it: the rule `up` uses, checked before any path is built. */
export function checkName(name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new UsageError(`'${name}' is not a deployment name`, {
      hint: "names are lowercase letters, digits and -, start with a letter, at most 40 characters; tpu-deploy status lists them",
    });
  }
  return name;
}

export function stateHome(env: NodeJS.ProcessEnv): string {
  if (env.TPU_DEPLOY_HOME) return env.TPU_DEPLOY_HOME;
  return join(env.HOME ?? "/root", ".tpu-deploy");
}
