// One HTTP/1.1 request to a server the host can reach, over a direct-tcpip channel of its SSH connection.
import { type IncomingHttpHeaders, request as httpRequest } from "node:http";
import { SshError } from "../../errors.js";
import { asSocketLike } from "../socket-like.js";
import { DEFAULT_FORWARD_TIMEOUT_MS, type HostSession } from "./session.js";
import { runStep, type StepLimits } from "./step.js";

export interface HttpViaSshRequest extends StepLimits {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface HttpViaSshResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export async function httpViaSsh(
  session: HostSession,
  destHost: string,
  destPort: number,
  req: HttpViaSshRequest,
): Promise<HttpViaSshResponse> {
  const method = req.method ?? "GET";
  const started = Date.now();
  const timeoutMs = req.timeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS;
  const channel = await session.forwardOut(destHost, destPort, { timeoutMs, signal: req.signal });
  try {
    const what = `HTTP ${method} ${req.path} to ${destHost}:${destPort}`;
    const remaining = Math.max(1, timeoutMs - (Date.now() - started));
    return await runStep<HttpViaSshResponse>(session.host, "forward", what, { timeoutMs: remaining, signal: req.signal }, (step) => {
      const fail = (cause: Error): void =>
        step.reject(
          new SshError({
            host: session.host,
            stage: "forward",
            cause,
            message: `${what} failed: ${cause.message}`,
            hint: "The server closed the connection or answered with something that is not HTTP/1.1; check its log.",
          }),
        );
      const request = httpRequest({
        method,
        path: req.path,
        host: destHost,
        port: destPort,
        headers: { ...req.headers, connection: "close" },
        createConnection: () => asSocketLike(channel),
      });
      step.onStop(() => request.destroy());
      request.on("error", fail);
      request.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("error", fail);
        res.on("end", () =>
          step.resolve({ status: res.statusCode ?? 0, headers: flattenHeaders(res.headers), body: Buffer.concat(chunks).toString("utf8") }),
        );
      });
      request.end(req.body);
    });
  } finally {
    channel.destroy();
  }
}

function flattenHeaders(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
  }
  return out;
}
