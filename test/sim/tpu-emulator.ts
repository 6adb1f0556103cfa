// Cloud TPU API v2 emulator: google.cloud.tpu.v2.Tpu + google.longrunning.Operations over insecure gRPC,
// serving the nodes of SIM_ROOT/state.json (tpu.md §3, §6). The protos are the ones shipped in the npm
// packages, so the real @google-cloud/tpu client talks to it unchanged.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as protoLoader from "@grpc/proto-loader";
import { grpc, protobuf } from "google-gax";
import { killHosts } from "./hosts.js";
import { appendCall, readFaults, readState, updateState, type SimHost, type SimState, type SimTpuNode } from "./state.js";

export interface TpuEmulatorOptions {
  root: string;
  port?: number;
  host?: string;
  /** Largest page the server returns whatever pageSize asks for (servers may return fewer). */
  maxPageSize?: number;
  /** How long a DeleteNode LRO stays running before the node is gone. */
  deleteDelayMs?: number;
}

export interface TpuEmulator {
  port: number;
  close(): Promise<void>;
}

// The catalog's v6e zones (skypilot.md §7).
const V6E_ZONES = new Set([
  "asia-east1-c",
  "asia-northeast1-b",
  "asia-south1-b",
  "asia-south1-c",
  "asia-southeast1-b",
  "europe-west4-a",
  "southamerica-east1-c",
  "southamerica-west1-a",
  "us-central1-a",
  "us-central1-b",
  "us-central1-c",
  "us-central2-b",
  "us-east1-d",
  "us-east4-a",
  "us-east5-a",
  "us-east5-b",
  "us-east5-c",
  "us-south1-a",
  "us-south1-c",
  "us-west1-c",
]);
// tpu.md §1.
const V6E_TOPOLOGY: Record<string, string> = {
  "v6e-1": "1x1",
  "v6e-4": "2x2",
  "v6e-8": "2x4",
  "v6e-16": "4x4",
  "v6e-32": "4x8",
  "v6e-64": "8x8",
  "v6e-128": "8x16",
  "v6e-256": "16x16",
};
const RUNTIME_VERSIONS = ["tpu-ubuntu2204-base", "tpu-vm-base", "v2-alpha-tpuv5", "v2-alpha-tpuv5-lite", "v2-alpha-tpuv6e"];
const DEFAULT_PAGE_SIZE = 50;
const ENDPOINT_PORT = 8470;
// No documented number; keys appear once the guest agent's first-boot step ran (hostkeys-sglang-facts.md §A).
const DEFAULT_HOST_KEYS_DELAY_MS = 1000;

const ZONE_RE = "[a-z]+-[a-z]+[0-9]+-[a-z]";
const PROJECT_RE = "[a-z][a-z0-9-]{4,28}[a-z0-9]";
const PARENT_RE = new RegExp(`^projects/(${PROJECT_RE})/locations/(${ZONE_RE}|-)$`);
const NODE_RE = new RegExp(`^projects/(${PROJECT_RE})/locations/(${ZONE_RE})/nodes/([a-z][a-z0-9-]*)$`);
const OP_RE = new RegExp(`^projects/(${PROJECT_RE})/locations/(${ZONE_RE})/operations/([a-z0-9-]+)$`);

type Msg = Record<string, unknown>;
type Handler = (req: Msg) => Promise<Msg>;

class RpcError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

const notFound = (name: string): RpcError => new RpcError(grpc.status.NOT_FOUND, `Resource '${name}' was not found`);
// Google answers a project the caller cannot see with IAM's 403, not 404 (it never says whether the project exists).
const denied = (permission: string, name: string): RpcError =>
  new RpcError(
    grpc.status.PERMISSION_DENIED,
    `Permission '${permission}' denied on resource '//tpu.googleapis.com/${name}' (or it may not exist).`,
  );
const invalid = (field: string, value: unknown, expected: string): RpcError =>
  new RpcError(grpc.status.INVALID_ARGUMENT, `Invalid value for field '${field}': ${JSON.stringify(value)}. Expected ${expected}.`);

interface LroRecord {
  name: string;
  project: string;
  target: string;
  createTime: number;
  endTime: number | null;
}

function protoDirs(): { tpu: string; gax: string; protosJson: string } {
  const require = createRequire(import.meta.url);
  const tpu = join(dirname(require.resolve("@google-cloud/tpu/package.json")), "build", "protos");
  const gax = join(dirname(require.resolve("google-gax/package.json")), "build", "protos");
  return { tpu, gax, protosJson: join(tpu, "protos.json") };
}

export async function startTpuEmulator(opts: TpuEmulatorOptions): Promise<TpuEmulator> {
  const { root } = opts;
  const maxPageSize = opts.maxPageSize ?? 500;
  const deleteDelayMs = opts.deleteDelayMs ?? 200;
  const dirs = protoDirs();
  const pkg = protoLoader.loadSync(["google/cloud/tpu/v2/cloud_tpu.proto", "google/longrunning/operations.proto"], {
    includeDirs: [dirs.tpu, dirs.gax],
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  // Any payloads are encoded with the client's own types (protos.json), since the client decodes with them.
  const require = createRequire(import.meta.url);
  const types = protobuf.Root.fromJSON(require(dirs.protosJson) as protobuf.INamespace);
  const pack = (typeName: string, obj: Msg): Msg => {
    const t = types.lookupType(typeName);
    return { type_url: `type.googleapis.com/${typeName}`, value: Buffer.from(t.encode(t.fromObject(obj)).finish()) };
  };

  const ops = new Map<string, LroRecord>();
  const timers = new Set<NodeJS.Timeout>();
  const pending = new Set<Promise<void>>();

  const parseParent = (parent: unknown, s: SimState, permission: string): { project: string; zone: string } => {
    const m = typeof parent === "string" ? PARENT_RE.exec(parent) : null;
    if (!m?.[1] || !m[2]) throw invalid("parent", parent, "projects/{project}/locations/{zone}");
    if (m[1] !== s.project) throw denied(permission, String(parent));
    return { project: m[1], zone: m[2] };
  };
  const zoneOnly = (p: { zone: string }, field: string, value: unknown): string => {
    if (p.zone === "-") throw invalid(field, value, "a zone, not the '-' wildcard");
    return p.zone;
  };
  const findNode = (name: unknown, s: SimState, permission: string): SimTpuNode => {
    const m = typeof name === "string" ? NODE_RE.exec(name) : null;
    if (!m) throw invalid("name", name, "projects/{project}/locations/{zone}/nodes/{node}");
    const node = s.nodes[m[0]];
    if (m[1] !== s.project) throw denied(permission, m[0]);
    if (!node) throw notFound(m[0]);
    return node;
  };

  const apiNode = (n: SimTpuNode, s: SimState): Msg => {
    const topology = V6E_TOPOLOGY[n.acceleratorType];
    const region = n.zone.replace(/-[a-z]$/, "");
    return {
      name: n.name,
      acceleratorType: n.acceleratorType,
      state: n.state,
      runtimeVersion: n.runtimeVersion,
      cidrBlock: "10.130.0.0/20",
      labels: n.labels,
      schedulingConfig: { preemptible: n.preemptible, reserved: false, spot: false },
      createTime: timestamp(n.createTime),
      id: n.id,
      // Index = TPU worker id (tpu.md §3 "Worker order").
      networkEndpoints: n.hostIds.flatMap((id) => {
        const h = s.hosts[id];
        return h ? [{ ipAddress: h.internalIp, port: ENDPOINT_PORT, accessConfig: { externalIp: h.externalIp } }] : [];
      }),
      networkConfig: {
        network: `projects/${s.project}/global/networks/default`,
        subnetwork: `projects/${s.project}/regions/${region}/subnetworks/default`,
        enableExternalIps: true,
      },
      serviceAccount: { email: "default", scope: ["https://www.googleapis.com/auth/cloud-platform"] },
      health: n.state === "READY" ? "HEALTHY" : "HEALTH_UNSPECIFIED",
      apiVersion: "V2",
      ...(topology ? { acceleratorConfig: { type: "V6E", topology } } : {}),
    };
  };

  const operation = (op: LroRecord): Msg => {
    const metadata = pack("google.cloud.tpu.v2.OperationMetadata", {
      createTime: timestamp(op.createTime),
      ...(op.endTime === null ? {} : { endTime: timestamp(op.endTime) }),
      target: op.target,
      verb: "delete",
      cancelRequested: false,
      apiVersion: "v2",
    });
    if (op.endTime === null) return { name: op.name, done: false, metadata };
    return { name: op.name, done: true, metadata, response: pack("google.protobuf.Empty", {}) };
  };

  const track = (p: Promise<void>): void => {
    pending.add(p);
    void p.finally(() => pending.delete(p));
  };

  const impl: Record<string, Handler> = {
    async GetNode(req) {
      const s = await readState(root);
      return apiNode(findNode(req.name, s, "tpu.nodes.get"), s);
    },
    async ListNodes(req) {
      const s = await readState(root);
      const { zone } = parseParent(req.parent, s, "tpu.nodes.list");
      const all = Object.values(s.nodes)
        .filter((n) => zone === "-" || n.zone === zone)
        .sort((a, b) => a.name.localeCompare(b.name));
      const page = paginate(all, req, maxPageSize);
      return { nodes: page.items.map((n) => apiNode(n, s)), nextPageToken: page.next, unreachable: [] };
    },
    async DeleteNode(req) {
      const s = await readState(root);
      const node = findNode(req.name, s, "tpu.nodes.delete");
      const zone = node.zone;
      await updateState(root, (st) => {
        const n = st.nodes[node.name];
        if (!n) throw notFound(node.name);
        n.state = "DELETING";
      });
      // Deleting a TPU node deletes its VMs (google.cloud.tpu.v2 DeleteNode); only inside a sim, which has the hosts.
      if (existsSync(join(root, "sim.json")))
        await killHosts(
          root,
          node.hostIds.filter((id) => s.hosts[id]?.alive === true),
        );
      const op: LroRecord = {
        name: `projects/${s.project}/locations/${zone}/operations/operation-${Date.now()}-${randomBytes(6).toString("hex")}`,
        project: s.project,
        target: node.name,
        createTime: Date.now(),
        endTime: null,
      };
      ops.set(op.name, op);
      const timer = setTimeout(() => {
        timers.delete(timer);
        track(
          updateState(root, (st) => {
            delete st.nodes[node.name];
          }).then(() => {
            op.endTime = Date.now();
          }),
        );
      }, deleteDelayMs);
      timers.add(timer);
      return operation(op);
    },
    async GetOperation(req) {
      const m = typeof req.name === "string" ? OP_RE.exec(req.name) : null;
      if (!m) throw invalid("name", req.name, "projects/{project}/locations/{zone}/operations/{operation}");
      const op = ops.get(m[0]);
      if (!op) throw notFound(m[0]);
      return operation(op);
    },
    async ListAcceleratorTypes(req) {
      const s = await readState(root);
      const p = parseParent(req.parent, s, "tpu.acceleratortypes.list");
      const zone = zoneOnly(p, "parent", req.parent);
      rejectUnsupported(req);
      const all = V6E_ZONES.has(zone)
        ? Object.entries(V6E_TOPOLOGY).map(([type, topology]) => ({
            name: `projects/${p.project}/locations/${zone}/acceleratorTypes/${type}`,
            type,
            acceleratorConfigs: [{ type: "V6E", topology }],
          }))
        : [];
      const page = paginate(all, req, maxPageSize);
      return { acceleratorTypes: page.items, nextPageToken: page.next, unreachable: [] };
    },
    async ListRuntimeVersions(req) {
      const s = await readState(root);
      const p = parseParent(req.parent, s, "tpu.runtimeversions.list");
      const zone = zoneOnly(p, "parent", req.parent);
      rejectUnsupported(req);
      const all = V6E_ZONES.has(zone)
        ? RUNTIME_VERSIONS.map((version) => ({ name: `projects/${p.project}/locations/${zone}/runtimeVersions/${version}`, version }))
        : [];
      const page = paginate(all, req, maxPageSize);
      return { runtimeVersions: page.items, nextPageToken: page.next, unreachable: [] };
    },
    // One entry per requested worker, in worker order, with no worker id in it: clients map entries to
    // workers by position (gcloud tpu_vm/ssh.py _ParseHostKeySuffixes; hostkeys-sglang-facts.md §A).
    async GetGuestAttributes(req) {
      const [s, faults] = await Promise.all([readState(root), readFaults(root)]);
      const node = findNode(req.name, s, "tpu.nodes.get");
      const workers = node.hostIds.map((_, i) => String(i));
      const wanted = Array.isArray(req.workerIds) && req.workerIds.length > 0 ? req.workerIds.map(String) : workers;
      for (const w of wanted) if (!workers.includes(w)) throw invalid("worker_ids", w, `a worker id of ${node.name}`);
      const queryPath = typeof req.queryPath === "string" ? req.queryPath : "";
      const ga = faults.guestAttributes ?? {};
      const delayMs = ga.hostKeysDelayMs ?? DEFAULT_HOST_KEYS_DELAY_MS;
      return {
        guestAttributes: wanted.map((w) => {
          const h = s.hosts[node.hostIds[Number(w)] ?? ""];
          const published = h !== undefined && ga.noHostKeys !== true && h.bootedAt !== undefined && Date.now() >= h.bootedAt + delayMs;
          const items = h ? guestAttributeItems(h, published).filter((i) => matchesQueryPath(i, queryPath)) : [];
          return { queryPath, queryValue: { items } };
        }),
      };
    },
  };

  const server = new grpc.Server();
  const addService = (service: protoLoader.ServiceDefinition, prefix: string): void => {
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const method of Object.keys(service)) {
      const fn = impl[method];
      handlers[method] = (call: grpc.ServerUnaryCall<Msg, Msg>, callback: grpc.sendUnaryData<Msg>): void => {
        const request = call.request;
        appendCall(root, "tpu", { method, request })
          .then(() => {
            if (!fn) throw new RpcError(grpc.status.UNIMPLEMENTED, `Method ${prefix}.${method} is not implemented by the emulator`);
            return fn(request);
          })
          .then(
            (res) => callback(null, res),
            (err: unknown) => {
              const e = err instanceof RpcError ? err : new RpcError(grpc.status.INTERNAL, `emulator: ${String(err)}`);
              callback({ code: e.code, details: e.message });
            },
          );
      };
    }
    server.addService(service as grpc.ServiceDefinition, handlers);
  };
  addService(pkg["google.cloud.tpu.v2.Tpu"] as protoLoader.ServiceDefinition, "google.cloud.tpu.v2.Tpu");
  addService(pkg["google.longrunning.Operations"] as protoLoader.ServiceDefinition, "google.longrunning.Operations");

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${opts.host ?? "127.0.0.1"}:${opts.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    );
  });

  let closed: Promise<void> | null = null;
  return {
    port,
    close() {
      closed ??= (async () => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        await Promise.allSettled([...pending]);
        await new Promise<void>((resolve) => {
          const force = setTimeout(() => server.forceShutdown(), 2000);
          server.tryShutdown(() => {
            clearTimeout(force);
            resolve();
          });
        });
      })();
      return closed;
    },
  };
}

// The guest agent writes each host key to guest-attributes/hostkeys/<type> (guest-agent instance_setup.go
// generateSSHKeys → writeGuestAttributes("hostkeys/"+type, key)) once its first-boot step ran. Asked
// without a queryPath, the API also returns other namespaces (gcloud's IAP path reads key "hostname";
// the namespace it sits in is not documented, so an empty one here): clients must filter on "hostkeys".
function guestAttributeItems(h: SimHost, keysPublished: boolean): Msg[] {
  const keys = keysPublished ? (h.hostKeys ?? []).map((k) => ({ namespace: "hostkeys", key: k.type, value: k.key })) : [];
  return [{ namespace: "", key: "hostname", value: h.hostname }, ...keys];
}

// A queryPath names a namespace ("hostkeys/") or one key in it ("hostkeys/ssh-ed25519"); empty means all.
function matchesQueryPath(item: Msg, queryPath: string): boolean {
  if (queryPath === "") return true;
  const [ns = "", key = ""] = queryPath.split("/");
  return item.namespace === ns && (key === "" || item.key === key);
}

function timestamp(ms: number): Msg {
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

function rejectUnsupported(req: Msg): void {
  for (const field of ["filter", "orderBy"]) {
    const v = req[field];
    if (typeof v === "string" && v !== "") throw new RpcError(grpc.status.UNIMPLEMENTED, `emulator: '${field}' is not supported`);
  }
}

// Page tokens are opaque to clients; here they carry the parent and offset so a token from another list is refused.
function paginate<T>(all: T[], req: Msg, maxPageSize: number): { items: T[]; next: string } {
  const pageSize = typeof req.pageSize === "number" ? req.pageSize : 0;
  if (pageSize < 0) throw invalid("page_size", pageSize, "a non-negative number");
  const size = Math.min(pageSize > 0 ? pageSize : DEFAULT_PAGE_SIZE, maxPageSize);
  let offset = 0;
  const token = typeof req.pageToken === "string" ? req.pageToken : "";
  if (token !== "") {
    const decoded = decodeToken(token);
    if (!decoded || decoded.parent !== req.parent || decoded.offset > all.length) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, `Invalid page token: ${token}`);
    }
    offset = decoded.offset;
  }
  const end = offset + size;
  const next = end < all.length ? Buffer.from(JSON.stringify({ parent: req.parent, offset: end })).toString("base64url") : "";
  return { items: all.slice(offset, end), next };
}

function decodeToken(token: string): { parent: string; offset: number } | null {
  try {
    const v: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (typeof v !== "object" || v === null) return null;
    const { parent, offset } = v as { parent?: unknown; offset?: unknown };
    if (typeof parent !== "string" || typeof offset !== "number" || !Number.isInteger(offset) || offset < 0) return null;
    return { parent, offset };
  } catch {
    return null;
  }
}
