// Where tpu-deploy keeps its files. Pure: computes paths from the environment, touches nothing.
import { join } from "node:path";

export function stateHome(env: NodeJS.ProcessEnv): string {
  if (env.TPU_DEPLOY_HOME) return env.TPU_DEPLOY_HOME;
  return join(env.HOME ?? "/root", ".tpu-deploy");
}

export function deploymentDir(env: NodeJS.ProcessEnv, name: string): string {
  return join(stateHome(env), "deployments", name);
}

export function taskPath(env: NodeJS.ProcessEnv, name: string): string {
  return join(deploymentDir(env, name), "sky.yaml");
}
