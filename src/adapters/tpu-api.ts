// The Cloud TPU API v2 port: the only module that loads @google-cloud/tpu, google-gax and google-auth-library.
// They are imported lazily inside createTpuApi so that `tpu-deploy --help` never loads gRPC.
// Client quirks handled here are tpu.md §5-6 (P1-P8).
// Long because it is the whole port of one client library, so its quirks stay in one place.
import type { protos as TpuProtos, v2 as TpuV2 } from "@google-cloud/tpu";
import type { CallOptions, ClientOptions } from "google-gax";
import { CloudApiError } from "../errors.js";

export type TpuNodeState =
  | "STATE_UNSPECIFIED"
  | "CREATING"
  | "READY"
  | "RESTARTING"
  | "REIMAGING"
  | "DELETING"
  | "REPAIRING"
  | "STOPPED"
  | "STOPPING"
  | "STARTING"
  | "PREEMPTED"
  | "TERMINATED"
  | "HIDING"
  | "HIDDEN"
  | "UNHIDING"
  | "UNKNOWN";
const NODE_STATES: ReadonlySet<string> = new Set<TpuNodeState>([
  "STATE_UNSPECIFIED",
  "CREATING",
  "READY",
  "RESTARTING",
  "REIMAGING",
  "DELETING",
  "REPAIRING",
  "STOPPED",
  "STOPPING",
  "STARTING",
  "PREEMPTED",
  "TERMINATED",
  "HIDING",
  "HIDDEN",
  "UNHIDING",
  "UNKNOWN",
]);

export interface TpuEndpoint {
  /** Index into networkEndpoints = TPU worker id (what gcloud's --worker=N and SkyPilot's head use). */
  workerId: number;
  internalIp: string;
  externalIp?: string;
}

export interface TpuNode {
  /** projects/{project}/locations/{zone}/nodes/{id} */
  name: string;
  zone: string;
  acceleratorType: string;
  state: TpuNodeState;
  labels: Record<string, string>;
  preemptible: boolean;
  spot: boolean;
  /** ISO 8601 */
  createTime?: string;
  /** In TPU worker order. */
  endpoints: TpuEndpoint[];
}

/** One entry of GetGuestAttributes: entry i is worker i (the response carries no worker id). */
export interface TpuGuestAttributes {
  queryPath: string;
  queryValue: { items: { namespace: string; key: string; value: string }[] };
}

export interface TpuApi {
  listNodes(project: string, zone: string): Promise<TpuNode[]>;
  /**
   * The node's guest attributes, one entry per worker in worker order (all workers unless workerIds).
   * Without a queryPath every namespace comes back, which is how gcloud asks for TPU VM host keys.
   */
  getGuestAttributes(
    nodeName: string,
    opts?: { queryPath?: string; workerIds?: string[]; signal?: AbortSignal },
  ): Promise<TpuGuestAttributes[]>;
  /** null when the node does not exist. */
  getNode(name: string): Promise<TpuNode | null>;
  /** Resolves once the node is gone (also when it was already gone). Aborting stops waiting, not the deletion. */
  deleteNode(name: string, opts?: { signal?: AbortSignal }): Promise<void>;
  /** Accelerator types offered in the zone, e.g. "v6e-16". */
  listAcceleratorTypes(project: string, zone: string): Promise<string[]>;
  close(): Promise<void>;
}

export interface TpuApiOptions {
  /** Deadline of each RPC. */
  callTimeoutMs?: number;
  /** How long deleteNode waits for its operation. */
  deleteTimeoutMs?: number;
  pageSize?: number;
}

// gRPC status names by code; the REST transport reports socket errors by their errno string instead (P6).
const STATUS_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;
const SOCKET_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "ETIMEDOUT", "EAI_AGAIN"]);

/** A failed Cloud TPU API call; `status` is the gRPC status name ("UNAVAILABLE", "PERMISSION_DENIED", …). */
export class TpuApiError extends CloudApiError {
  readonly status: string;
  readonly method: string;
  constructor(method: string, status: string, message: string, hint: string | undefined, cause: unknown) {
    super(message, { hint, cause });
    this.status = status;
    this.method = method;
  }
}

export const CLUSTER_LABEL = "skypilot-cluster-name";
const HEAD_LABEL = "skypilot-head-node";

/** The TPU nodes of one SkyPilot cluster (ListNodes has no filter), head node first. */
export function nodesOfCluster(nodes: readonly TpuNode[], nameOnCloud: string): TpuNode[] {
  return nodes
    .filter((n) => n.labels[CLUSTER_LABEL] === nameOnCloud)
    .sort((a, b) => headRank(a) - headRank(b) || a.name.localeCompare(b.name));
}

function headRank(n: TpuNode): number {
  return n.labels[HEAD_LABEL] === "1" ? 0 : 1;
}

interface Target {
  emulator: string | null;
  client: ClientOptions;
}

type Cancellable<T> = Promise<T> & { cancel?: () => void };
type NodeType = typeof TpuProtos.google.cloud.tpu.v2.Node;
type INode = TpuProtos.google.cloud.tpu.v2.INode;

export async function createTpuApi(env: NodeJS.ProcessEnv, opts: TpuApiOptions = {}): Promise<TpuApi> {
  const callTimeoutMs = opts.callTimeoutMs ?? 30_000;
  const deleteTimeoutMs = opts.deleteTimeoutMs ?? 15 * 60_000;
  const pageSize = opts.pageSize ?? 100;
  const emulatorHost = env.TPU_EMULATOR_HOST?.trim() || null;

  const [tpu, gax] = await Promise.all([import("@google-cloud/tpu"), import("google-gax")]);
  const target: Target = { emulator: emulatorHost, client: {} };
  if (emulatorHost) {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(emulatorHost);
    if (!m?.[1] || !m[2]) {
      throw new CloudApiError(`TPU_EMULATOR_HOST is not host:port: ${JSON.stringify(emulatorHost)}`, {
        hint: "Set TPU_EMULATOR_HOST=127.0.0.1:<port>, or unset it to use the real Cloud TPU API.",
      });
    }
    const { PassThroughClient } = await import("google-auth-library");
    target.client = {
      // Host and port apart: in gRPC mode "host:port" would become "host:port:443" (P4).
      apiEndpoint: m[1],
      port: Number(m[2]),
      // gax's own grpc copy, or the credentials fail its instanceof check (P2).
      sslCreds: gax.grpc.credentials.createInsecure(),
      // No ADC lookup and no metadata-server probe at construction (P1); the type is JSONClient (P5).
      authClient: new PassThroughClient() as unknown as ClientOptions["authClient"],
    };
  }
  const client: TpuV2.TpuClient = new tpu.v2.TpuClient(target.client);
  const Node: NodeType = tpu.protos.google.cloud.tpu.v2.Node;
  const callOpts = (): CallOptions => ({ timeout: callTimeoutMs, autoPaginate: false });

  async function rpc<T>(method: string, subject: string, start: () => Cancellable<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    const p = start();
    const onAbort = (): void => p.cancel?.();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await p;
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw translateError(method, subject, err, target.emulator, callTimeoutMs);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  // Manual paging (autoPaginate would warn, P7), guarded against a server that repeats a token.
  async function listAll<Req extends { pageToken?: string | null }, Item>(
    method: string,
    subject: string,
    first: Req,
    page: (req: Req) => Cancellable<[Item[], Req | null, unknown]>,
  ): Promise<Item[]> {
    const out: Item[] = [];
    const seen = new Set<string>();
    let req: Req | null = first;
    while (req) {
      const [items, next]: [Item[], Req | null, unknown] = await rpc(method, subject, () => page(req as Req));
      out.push(...items);
      const token = next?.pageToken ?? "";
      if (token === "" || seen.has(token)) break;
      seen.add(token);
      req = next;
    }
    return out;
  }

  const toNode = (raw: TpuProtos.google.cloud.tpu.v2.INode): TpuNode => normalizeNode(Node, raw);

  return {
    async listNodes(project, zone) {
      const parent = `projects/${project}/locations/${zone}`;
      const nodes = await listAll<TpuProtos.google.cloud.tpu.v2.IListNodesRequest, INode>("listNodes", parent, { parent, pageSize }, (r) =>
        client.listNodes(r, callOpts()),
      );
      return nodes.map(toNode);
    },
    async getNode(name) {
      try {
        const [raw] = await rpc("getNode", name, () => client.getNode({ name }, callOpts()));
        return toNode(raw);
      } catch (err) {
        if (err instanceof TpuApiError && err.status === "NOT_FOUND") return null;
        throw err;
      }
    },
    async getGuestAttributes(name, { queryPath, workerIds, signal } = {}) {
      const [res] = await rpc(
        "getGuestAttributes",
        name,
        () => client.getGuestAttributes({ name, ...(queryPath ? { queryPath } : {}), ...(workerIds ? { workerIds } : {}) }, callOpts()),
        signal,
      );
      return (res.guestAttributes ?? []).map((g) => ({
        queryPath: g.queryPath ?? "",
        queryValue: {
          items: (g.queryValue?.items ?? []).map((i) => ({ namespace: i.namespace ?? "", key: i.key ?? "", value: i.value ?? "" })),
        },
      }));
    },
    async deleteNode(name, { signal } = {}) {
      // NOT_FOUND: already gone, which is what the caller wants.
      const lro = await rpc(
        "deleteNode",
        name,
        () =>
          client.deleteNode(
            { name },
            {
              timeout: callTimeoutMs,
              // Poll from 250 ms up to every 5 s; the default has no total timeout (tpu.md §5).
              longrunning: gax.createBackoffSettings(250, 1.5, 5000, null, null, null, deleteTimeoutMs),
            },
          ),
        signal,
      ).then(
        ([op]) => op,
        (err: unknown) => {
          if (err instanceof TpuApiError && err.status === "NOT_FOUND") return undefined;
          throw err;
        },
      );
      if (!lro) return;
      await new Promise<void>((resolve, reject) => {
        const stop = (): void => {
          // Removing the 'complete' listener stops gax's polling loop; the deletion itself goes on.
          lro.removeAllListeners("complete");
          lro.removeAllListeners("error");
          signal?.removeEventListener("abort", onAbort);
        };
        const onAbort = (): void => {
          stop();
          reject(signal?.reason);
        };
        lro.on("complete", () => {
          stop();
          resolve();
        });
        lro.on("error", (err: unknown) => {
          stop();
          reject(translateError("deleteNode", name, err, target.emulator, deleteTimeoutMs));
        });
        if (signal?.aborted) onAbort();
        else signal?.addEventListener("abort", onAbort, { once: true });
      });
    },
    async listAcceleratorTypes(project, zone) {
      const parent = `projects/${project}/locations/${zone}`;
      const types = await listAll<
        TpuProtos.google.cloud.tpu.v2.IListAcceleratorTypesRequest,
        TpuProtos.google.cloud.tpu.v2.IAcceleratorType
      >("listAcceleratorTypes", parent, { parent, pageSize }, (r) => client.listAcceleratorTypes(r, callOpts()));
      return types.map((t) => t.type ?? "").filter((t) => t !== "");
    },
    async close() {
      // close() can reject with a stub-creation error (P8); there is nothing left to release then.
      try {
        await client.close();
      } catch {
        /* ignored on purpose */
      }
    },
  };
}

// LRO results are protobufjs messages with numeric enums, unary results plain objects with string enums (P3):
// round-trip through the message type so both come out the same.
function normalizeNode(Node: NodeType, raw: TpuProtos.google.cloud.tpu.v2.INode): TpuNode {
  const msg = raw instanceof Node ? raw : Node.fromObject(raw as Record<string, unknown>);
  const o = Node.toObject(msg, { enums: String, longs: String, defaults: true }) as {
    name: string;
    acceleratorType: string;
    state: string;
    labels: Record<string, string>;
    schedulingConfig?: { preemptible?: boolean; spot?: boolean } | null;
    createTime?: { seconds?: string; nanos?: number } | null;
    networkEndpoints: { ipAddress?: string; accessConfig?: { externalIp?: string } | null }[];
    acceleratorConfig?: { type?: string; topology?: string } | null;
  };
  const zone = /\/locations\/([^/]+)\//.exec(o.name)?.[1] ?? "";
  const seconds = Number(o.createTime?.seconds ?? 0);
  const node: TpuNode = {
    name: o.name,
    zone,
    acceleratorType: o.acceleratorType || acceleratorTypeOf(o.acceleratorConfig),
    state: NODE_STATES.has(o.state) ? (o.state as TpuNodeState) : "STATE_UNSPECIFIED",
    labels: { ...o.labels },
    preemptible: o.schedulingConfig?.preemptible === true,
    spot: o.schedulingConfig?.spot === true,
    endpoints: o.networkEndpoints.map((e, workerId) => {
      const externalIp = e.accessConfig?.externalIp;
      return { workerId, internalIp: e.ipAddress ?? "", ...(externalIp ? { externalIp } : {}) };
    }),
  };
  if (seconds > 0) node.createTime = new Date(seconds * 1000 + Math.floor((o.createTime?.nanos ?? 0) / 1e6)).toISOString();
  return node;
}

// A node created with acceleratorConfig instead of acceleratorType: v6e has one chip per topology cell.
function acceleratorTypeOf(cfg: { type?: string; topology?: string } | null | undefined): string {
  if (cfg?.type !== "V6E" || !cfg.topology) return "";
  const chips = cfg.topology.split("x").reduce((acc, d) => acc * Number(d), 1);
  return Number.isInteger(chips) && chips > 0 ? `v6e-${chips}` : "";
}

function statusOf(err: unknown): string {
  const e = (typeof err === "object" && err !== null ? err : {}) as { code?: unknown; message?: unknown };
  if (typeof e.code === "number") return STATUS_NAMES[e.code] ?? "UNKNOWN";
  if (typeof e.code === "string" && SOCKET_ERRNOS.has(e.code)) return "UNAVAILABLE";
  const msg = typeof e.message === "string" ? e.message : "";
  if (/Could not load the default credentials|invalid_grant|Could not refresh access token/i.test(msg)) return "UNAUTHENTICATED";
  return "UNKNOWN";
}

function translateError(method: string, subject: string, err: unknown, emulator: string | null, timeoutMs: number): TpuApiError {
  const status = statusOf(err);
  const e = (typeof err === "object" && err !== null ? err : {}) as { details?: unknown; message?: unknown };
  const detail = typeof e.details === "string" && e.details !== "" ? e.details : typeof e.message === "string" ? e.message : String(err);
  const project = /^projects\/([^/]+)/.exec(subject)?.[1] ?? "<project>";
  const where = emulator ? `the TPU API emulator at ${emulator}` : "tpu.googleapis.com";
  let hint: string | undefined;
  switch (status) {
    case "UNAVAILABLE":
      hint = emulator
        ? `Nothing answers at TPU_EMULATOR_HOST=${emulator}; start the emulator or unset TPU_EMULATOR_HOST.`
        : "Could not reach tpu.googleapis.com; check the network (proxy, firewall, VPN) and retry.";
      break;
    case "UNAUTHENTICATED":
      hint = "Run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key.";
      break;
    case "PERMISSION_DENIED":
      hint = `The account needs roles/tpu.viewer on project ${project} (roles/tpu.admin to delete nodes), and the API must be enabled: gcloud services enable tpu.googleapis.com --project ${project}`;
      break;
    case "DEADLINE_EXCEEDED":
      hint = `${where} did not finish within ${Math.round(timeoutMs / 1000)} s; retry later.`;
      break;
    case "RESOURCE_EXHAUSTED":
      hint = "The Cloud TPU API rate limit was hit; wait a minute and retry.";
      break;
    case "NOT_FOUND":
    case "INVALID_ARGUMENT":
      hint = `Check the project id and zone in ${subject}.`;
      break;
  }
  return new TpuApiError(method, status, `Cloud TPU API ${method} failed for ${subject}: ${status}: ${detail}`, hint, err);
}
