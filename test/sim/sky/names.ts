// Names SkyPilot derives for a cluster on GCP (skypilot.md §6; sky/utils/common_utils.py).
import { createHash, randomUUID } from "node:crypto";
import { userInfo } from "node:os";

export const CLUSTER_NAME_VALID_REGEX = "[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?";
const GCP_MAX_NAME = 35;
const CLUSTER_NAME_HASH_LENGTH = 2;

// common_utils.base36_encode(hex string).
export function base36(hex: string): string {
  let n = BigInt(`0x${hex}`);
  if (n === 0n) return "0";
  const digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  let s = "";
  while (n > 0n) {
    s = digits[Number(n % 36n)] + s;
    n /= 36n;
  }
  return s;
}

// common_utils.make_cluster_name_on_cloud(display_name, max_length=35, add_user_hash=True).
export function nameOnCloud(display: string, userHash: string): string {
  const lowered = display.replace(/[._]/g, "-").toLowerCase();
  const suffix = `-${userHash}`;
  if (lowered.length <= GCP_MAX_NAME - suffix.length) return `${lowered}${suffix}`;
  const keep = GCP_MAX_NAME - CLUSTER_NAME_HASH_LENGTH - 1 - suffix.length;
  let truncated = lowered.slice(0, keep);
  if (truncated.endsWith("-")) truncated = truncated.replace(/-+$/, "");
  const hash = base36(createHash("md5").update(display).digest("hex")).slice(0, CLUSTER_NAME_HASH_LENGTH);
  return `${truncated}-${hash}${suffix}`;
}

// instance_utils._generate_node_name for TPU VMs.
export function tpuNodeId(nameOnCloudValue: string, isHead: boolean): string {
  const suffix = base36(randomUUID().replace(/-/g, "")).slice(0, 8);
  return `${nameOnCloudValue}-${isHead ? "head" : "worker"}-${suffix}-tpu`;
}

export function isValidClusterName(name: string): boolean {
  return new RegExp(`^(?:${CLUSTER_NAME_VALID_REGEX})$`).test(name);
}

// common_utils.get_cleaned_username().
export function cleanedUsername(): string {
  let u = "user";
  try {
    u = userInfo().username;
  } catch {
    u = process.env.USER ?? "user";
  }
  return (
    u
      .toLowerCase()
      .replace(/[^a-z0-9-_]/g, "")
      .replace(/^[^a-z]+/, "") || "user"
  );
}

export function localUsername(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? "user";
  }
}

// common_utils.generate_cluster_name(): sky-<4 hex>-<user>.
export function generateClusterName(): string {
  return `sky-${randomUUID().replace(/-/g, "").slice(0, 4)}-${cleanedUsername()}`;
}
