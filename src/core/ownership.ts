// Who owns a cluster: every cluster and TPU node tpu-deploy launches carries the label tpu-deploy-owner with
// this installation's id (kept in TPU_DEPLOY_HOME), so two machines sharing one SkyPilot identity never stop,
// relaunch or collect each other's deployments, and gc still knows its own orphans after their state is
// lost. Pure: the id is derived here from facts the state store reads.
import { createHash } from "node:crypto";

export const OWNER_LABEL = "tpu-deploy-owner";

/** GCP label values: lowercase letters, digits, - and _, at most 63 (an id is 16 hex digits). */
export const INSTALLATION_ID = /^[a-f0-9]{16}$/;

/**
 * The id an installation gets the first time it launches: a digest of the machine, the user and the state
 * directory, so the dry run shows the same label `up` then writes. Stored on first use and read from the
 * file after that (so renaming the host keeps ownership).
 */
export function deriveInstallationId(facts: { machineId: string; hostname: string; stateHome: string; uid: number }): string {
  return createHash("sha256").update(`${facts.machineId}\n${facts.hostname}\n${facts.stateHome}\n${facts.uid}`).digest("hex").slice(0, 16);
}

export type Ownership = { kind: "ours" } | { kind: "unlabelled" } | { kind: "other"; owner: string };

/** Made by this installation, by another one, or before owner labels existed (treated as ours by commands on a recorded deployment). */
export function ownershipOf(labels: Readonly<Record<string, string>> | null | undefined, me: string): Ownership {
  const owner = labels?.[OWNER_LABEL];
  if (owner === undefined || owner === "") return { kind: "unlabelled" };
  return owner === me ? { kind: "ours" } : { kind: "other", owner };
}
