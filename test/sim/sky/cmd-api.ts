// `sky api cancel|status|logs` over the simulated API server's requests, and a minimal `sky check`.
import { existsSync, readFileSync } from "node:fs";
import { commandSpec, usageError, type Parsed } from "./click.js";
import { killProcessTree } from "./cluster.js";
import { requireRoot, syncUserHash, type Ctx } from "./context.js";
import { out, outln } from "./io.js";
import { pyJsonDumps, renderTable } from "./pyfmt.js";
import { localUsername } from "./names.js";
import { serverUrl, streamRequest } from "./requests.js";
import { SKY_COMMIT, SKY_VERSION } from "./version.js";
import { listRequests, requestLogPath, updateRequest } from "./server-db.js";

const ACTIVE = ["PENDING", "RUNNING"];

export async function cmdApiCancel(ctx: Ctx, p: Parsed): Promise<number> {
  const spec = commandSpec("api cancel");
  if (!spec) throw new Error("no api cancel spec");
  const ids = p.list("request_ids");
  const all = p.bool("all") || p.bool("all_users");
  if (ids.length === 0 && !all) throw usageError(spec, "Either specify request IDs or use --all to cancel all requests.");
  requireRoot(ctx);
  const reqs = listRequests(ctx.root);
  const targets = all
    ? reqs.filter((r) => ACTIVE.includes(r.status))
    : reqs.filter((r) => ids.some((id) => r.requestId.startsWith(id)) && ACTIVE.includes(r.status));
  const cancelled: string[] = [];
  for (const r of targets) {
    // The executor dies where it is: a half-provisioned cluster stays INIT.
    if (r.pid !== null) killProcessTree(r.pid);
    const done = await updateRequest(ctx.root, r.requestId, (x) => {
      if (ACTIVE.includes(x.status)) {
        x.status = "CANCELLED";
        x.finishedAt = Date.now() / 1000;
      }
    });
    if (done?.status === "CANCELLED") cancelled.push(r.requestId);
  }
  if (cancelled.length === 0) outln("No requests need to be cancelled.");
  else if (cancelled.length === 1) outln(`Cancelled 1 request: ${cancelled[0]}`);
  else outln(`Cancelled ${cancelled.length} requests.`);
  return 0;
}

export async function cmdApiStatus(ctx: Ctx, p: Parsed): Promise<number> {
  requireRoot(ctx);
  const prefixes = p.list("request_id_prefixes");
  const cluster = p.str("cluster");
  let reqs = listRequests(ctx.root).filter(
    (r) => (prefixes.length === 0 || prefixes.some((x) => r.requestId.startsWith(x))) && (cluster === null || r.clusterName === cluster),
  );
  if (!p.bool("all_status") && prefixes.length === 0) reqs = reqs.filter((r) => ACTIVE.includes(r.status));
  const limit = p.values.get("limit");
  if (typeof limit === "number") reqs = reqs.slice(-limit);
  else if (!p.present.has("limit")) reqs = reqs.slice(-50);
  if (p.str("output") === "json") {
    outln(
      pyJsonDumps(
        reqs.map((r) => ({
          request_id: r.requestId,
          name: r.name,
          user_id: r.userHash,
          status: r.status,
          created_at: r.createdAt,
          cluster_name: r.clusterName,
        })),
      ),
    );
    return 0;
  }
  const verbose = p.bool("verbose");
  const header = ["ID", "USER", "NAME", ...(verbose ? ["CLUSTER"] : []), "CREATED", "STATUS"];
  const rows = reqs.map((r) => [
    verbose ? r.requestId : r.requestId.slice(0, 36),
    r.userName,
    r.name,
    ...(verbose ? [r.clusterName ?? "-"] : []),
    new Date(r.createdAt * 1000).toISOString().replace("T", " ").slice(0, 19),
    r.status,
  ]);
  outln(renderTable(header, rows));
  return 0;
}

export async function cmdApiLogs(ctx: Ctx, p: Parsed): Promise<number> {
  requireRoot(ctx);
  const id = p.str("request_id");
  const reqs = listRequests(ctx.root);
  const r = id === null ? reqs[reqs.length - 1] : reqs.find((x) => x.requestId.startsWith(id));
  if (!r) {
    outln(`Request ${id ?? ""} not found.`);
    return 1;
  }
  const follow = p.tri("follow") ?? true;
  if (!follow || !ACTIVE.includes(r.status)) {
    const path = requestLogPath(ctx.root, r.requestId);
    if (existsSync(path)) out(readFileSync(path, "utf8"));
    return 0;
  }
  await streamRequest(ctx.root, ctx.env, r.requestId);
  return 0;
}

export async function cmdCheck(_ctx: Ctx, p: Parsed): Promise<number> {
  const infra = p.list("infra_list").map((x) => x.toLowerCase());
  if (p.str("output") === "json") {
    outln(pyJsonDumps({ default: ["GCP"] }));
    return 0;
  }
  outln("Checking credentials to enable infra for SkyPilot.");
  if (infra.length === 0 || infra.includes("gcp")) outln("  GCP: enabled [compute, storage]");
  for (const other of infra.filter((x) => x !== "gcp")) outln(`  ${other}: disabled`);
  outln("");
  outln("🎉 Enabled infra 🎉");
  outln("  GCP [compute, storage]");
  return 0;
}

// The simulated API server is always up (it is the sim itself).
export async function cmdApiInfo(ctx: Ctx, p: Parsed): Promise<number> {
  requireRoot(ctx);
  const userHash = await syncUserHash(ctx);
  const url = serverUrl(ctx.env);
  const user = localUsername();
  if (p.str("output") === "json") {
    outln(
      pyJsonDumps({
        url,
        status: "healthy",
        api_version: "1",
        version: SKY_VERSION,
        commit: SKY_COMMIT,
        user: { name: user, id: userHash },
      }),
    );
    return 0;
  }
  outln(`Using SkyPilot API server and dashboard: ${url}`);
  outln(`├── Status: healthy, commit: ${SKY_COMMIT}, version: ${SKY_VERSION}`);
  outln(`└── User: ${user} (${userHash})`);
  return 0;
}

export async function cmdApiStart(ctx: Ctx): Promise<number> {
  outln(`SkyPilot API server is running at ${serverUrl(ctx.env)}.`);
  return 0;
}

export async function cmdApiStop(): Promise<number> {
  outln("SkyPilot API server stopped.");
  return 0;
}
