// What rank 0's GET /get_server_info must say once the replica serves (docs/upstream/sglang-jax.md §5-6:
// every ServerArgs field is there). A server that disagrees is not the one we started. Pure.
import { z } from "zod";

const serverInfo = z.looseObject({
  nnodes: z.coerce.number(),
  tp_size: z.coerce.number(),
  dist_init_addr: z.string().nullish(),
  node_rank: z.coerce.number().optional(),
});

export interface AuditExpectation {
  nnodes: number;
  tpSize: number;
  /** rank 0's `internal-ip:P`; undefined for one host (sglang-jax ignores the address then). */
  distInitAddr: string | undefined;
}

export function auditServerInfo(
  status: number,
  body: string,
  want: AuditExpectation,
): { info: Record<string, unknown>; mismatches: string[] } {
  if (status !== 200) return { info: {}, mismatches: [`HTTP ${status}`] };
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch {
    return { info: {}, mismatches: [`not JSON: ${JSON.stringify(body.slice(0, 120))}`] };
  }
  const parsed = serverInfo.safeParse(raw);
  if (!parsed.success)
    return { info: {}, mismatches: [`not sglang-jax's server info (${parsed.error.issues[0]?.path.join(".")}: missing or wrong)`] };
  const info = parsed.data;
  const mismatches: string[] = [];
  if (info.nnodes !== want.nnodes) mismatches.push(`nnodes ${info.nnodes} ≠ ${want.nnodes}`);
  if (info.tp_size !== want.tpSize) mismatches.push(`tp_size ${info.tp_size} ≠ ${want.tpSize}`);
  if (info.node_rank !== undefined && info.node_rank !== 0) mismatches.push(`node_rank ${info.node_rank} ≠ 0`);
  if (want.distInitAddr !== undefined && info.dist_init_addr !== want.distInitAddr) {
    mismatches.push(`dist_init_addr ${String(info.dist_init_addr)} ≠ ${want.distInitAddr}`);
  }
  return { info, mismatches };
}
