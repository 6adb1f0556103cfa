// The fence between installations that share one SkyPilot identity: before a command stops servers, tears
// down, relaunches or collects a cluster, it reads the cluster's owner label (sky status -v) and refuses one
// that another installation launched, naming it; `--force` takes it over. A cluster made before owner
// labels existed counts as ours when this installation has its state.
import { ownershipOf } from "../core/ownership.js";
import { OperationError } from "../errors.js";
import type { AppContext } from "./context.js";

export class NotOwnerError extends OperationError {
  constructor(
    message: string,
    readonly owner: string,
    hint: string,
  ) {
    super("not_owner", message, { hint });
  }
}

/**
 * Throws NotOwnerError when one of the clusters carries another installation's owner label. Clusters that
 * are gone or unlabelled pass. `doing` says what --force would do, for the hint ("take it down").
 */
export async function assertOwned(
  ctx: AppContext,
  name: string,
  clusters: readonly string[],
  opts: { force?: boolean | undefined; doing: string },
): Promise<void> {
  if (clusters.length === 0) return;
  const me = ctx.store.installationId();
  const sky = await ctx.sky();
  const records = await sky.status([...clusters], { verbose: true, signal: ctx.signal });
  const others = records.flatMap((rec) => {
    const o = ownershipOf(rec.labels, me);
    return o.kind === "other" ? [{ cluster: rec.name, owner: o.owner }] : [];
  });
  if (others.length === 0) return;
  const list = others.map((x) => `${x.cluster} (installation ${x.owner})`).join(", ");
  if (opts.force) {
    ctx.report.warn(`--force: acting on ${list}, which another tpu-deploy installation launched (this one is ${me})`);
    return;
  }
  throw new NotOwnerError(
    `${name}: ${list} ${others.length === 1 ? "belongs" : "belong"} to another tpu-deploy installation (this one is ${me}); nothing was done to ${others.length === 1 ? "it" : "them"}`,
    others[0]?.owner ?? "",
    `run this from the machine that launched it, or add --force to ${opts.doing} from here anyway`,
  );
}
