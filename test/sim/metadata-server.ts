// GCE metadata server emulator. Like the real one it serves each VM its own identity, which it tells
// apart by the caller's source address (the host's external IP on the tpdext bridge), and it refuses
// requests without `Metadata-Flavor: Google` (or with X-Forwarded-For), so a client that forgets the
// header fails here as it would on GCP.
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { readState, type SimHost, type SimState } from "./state.js";

export interface MetadataServerOptions {
  root: string;
  host?: string;
  port?: number;
}

export interface MetadataServer {
  host: string;
  port: number;
  close(): Promise<void>;
}

type Value = { kind: "text"; text: string } | { kind: "missing" };

// GCP project numbers are 12 digits; a stable one per project id is all the sim needs.
export function projectNumber(project: string): string {
  const digits = BigInt("0x" + createHash("sha256").update(project).digest("hex").slice(0, 15)) % 900_000_000_000n;
  return String(100_000_000_000n + digits);
}

// Resolves one metadata path for one host; exported so tests of the mapping need no network.
export function metadataValue(s: SimState, host: SimHost, path: string): Value {
  const num = projectNumber(s.project);
  const node = host.nodeName === null ? undefined : s.nodes[host.nodeName];
  const cluster = s.clusters[host.cluster];
  const text = (t: string): Value => ({ kind: "text", text: t });
  switch (path) {
    case "/computeMetadata/v1/instance/attributes/agent-worker-number":
      return text(String(host.workerId));
    case "/computeMetadata/v1/instance/attributes/accelerator-type":
      // Only TPU VMs made through the Cloud TPU API carry it (tpu7x hosts are plain GCE VMs).
      return node ? text(node.acceleratorType) : { kind: "missing" };
    case "/computeMetadata/v1/instance/network-interfaces/0/ip":
      return text(host.internalIp);
    case "/computeMetadata/v1/instance/network-interfaces/0/access-configs/0/external-ip":
      return text(host.externalIp);
    case "/computeMetadata/v1/instance/hostname":
      return text(`${host.hostname}.${host.zone}.c.${s.project}.internal`);
    case "/computeMetadata/v1/instance/name":
      return text(host.hostname);
    case "/computeMetadata/v1/instance/zone":
      return text(`projects/${num}/zones/${host.zone}`);
    case "/computeMetadata/v1/instance/machine-type":
      return cluster?.instanceType ? text(`projects/${num}/machineTypes/${cluster.instanceType}`) : { kind: "missing" };
    case "/computeMetadata/v1/project/project-id":
      return text(s.project);
    case "/computeMetadata/v1/project/numeric-project-id":
      return text(num);
    default:
      return { kind: "missing" };
  }
}

export async function startMetadataServer(opts: MetadataServerOptions): Promise<MetadataServer> {
  const host = opts.host ?? "198.18.0.1";
  const server = createServer((req, res) => {
    handle(opts.root, req, res).catch((e: unknown) => {
      if (!res.headersSent) send(res, 500, `internal error: ${String(e)}\n`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("metadata server has no TCP address");
  let closed: Promise<void> | null = null;
  return {
    host,
    port: addr.port,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

async function handle(root: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://metadata.google.internal");
  if (req.headers["x-forwarded-for"] !== undefined) {
    send(res, 403, "Request denied: X-Forwarded-For header present.\n");
    return;
  }
  if (req.headers["metadata-flavor"] !== "Google") {
    send(
      res,
      403,
      `Your client does not have permission to get URL ${url.pathname} from this server. Missing Metadata-Flavor:Google header.\n`,
    );
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    send(res, 405, "Method not allowed.\n");
    return;
  }
  const caller = normalizeIp(req.socket.remoteAddress ?? "");
  const s = await readState(root);
  const host = Object.values(s.hosts).find((h) => h.alive && (h.externalIp === caller || h.internalIp === caller));
  const v = host ? metadataValue(s, host, url.pathname) : ({ kind: "missing" } as Value);
  if (v.kind === "missing") {
    send(res, 404, notFoundBody(url.pathname));
    return;
  }
  const alt = url.searchParams.get("alt");
  if (alt === "json") send(res, 200, JSON.stringify(v.text), "application/json");
  else send(res, 200, v.text);
}

function notFoundBody(path: string): string {
  return `The requested URL ${path} was not found on this server.\n`;
}

function send(res: ServerResponse, status: number, body: string, contentType = "text/plain"): void {
  res.writeHead(status, {
    "Metadata-Flavor": "Google",
    "Content-Type": contentType,
    "Content-Length": Buffer.byteLength(body),
    Server: "Metadata Server for VM",
  });
  res.end(body);
}

function normalizeIp(a: string): string {
  return a.startsWith("::ffff:") ? a.slice(7) : a;
}
