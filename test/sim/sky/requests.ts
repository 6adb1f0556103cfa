// The client's side of API-server requests: create one, start its detached executor, stream its log
// (Ctrl-C leaves it running, as command.py _async_call_or_wait does), print the --async hints.
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { processAlive } from "./cluster.js";
import { Abort, SkyException } from "./errors.js";
import { beginStreaming, endStreaming, wasInterrupted } from "./interrupt.js";
import { fileTailer, out, outln } from "./io.js";
import { localUsername } from "./names.js";
import { newRequestId, readRequest, requestLogPath, updateRequest, writeRequest, type RequestRecord } from "./server-db.js";

export function serverUrl(env: NodeJS.ProcessEnv): string {
  return (env.SKYPILOT_API_SERVER_ENDPOINT ?? "http://127.0.0.1:46580").replace(/\/+$/, "");
}

export async function createRequest(root: string, name: string, clusterName: string | null, userHash: string): Promise<RequestRecord> {
  const r: RequestRecord = {
    requestId: newRequestId(),
    name,
    status: "PENDING",
    clusterName,
    createdAt: Date.now() / 1000,
    finishedAt: null,
    pid: null,
    userName: localUsername(),
    userHash,
    result: null,
    error: null,
  };
  await writeRequest(root, r);
  closeSync(openSync(requestLogPath(root, r.requestId), "a"));
  return r;
}

// Starts the executor in its own session; the payload (which may hold secrets) goes over stdin.
export async function startWorker(root: string, requestId: string, payload: unknown, env: NodeJS.ProcessEnv): Promise<void> {
  const workerJs = join(dirname(fileURLToPath(import.meta.url)), "worker.js");
  const errFd = openSync(join(root, "requests", `${requestId}.worker.log`), "a");
  const child = spawn(process.execPath, [workerJs], {
    detached: true,
    stdio: ["pipe", errFd, errFd],
    env: { ...env, TPD_SIM_ROOT: root },
  });
  closeSync(errFd);
  await updateRequest(root, requestId, (r) => {
    r.pid = child.pid ?? null;
  });
  child.stdin?.on("error", () => undefined);
  child.stdin?.end(JSON.stringify(payload));
  child.unref();
}

export function printAsyncSubmitted(env: NodeJS.ProcessEnv, name: string, id: string): void {
  const short = id.slice(0, 8);
  outln(`Submitted ${name} request: ${id}`);
  outln(`├── Check logs with: sky api logs ${short}`);
  outln(`├── Or, visit: ${serverUrl(env)}/api/stream?request_id=${short}`);
  outln(`└── To cancel the request, run: sky api cancel ${short}`);
  outln();
}

const TERMINAL = ["SUCCEEDED", "FAILED", "CANCELLED"];

// sdk.stream_and_get: the request's log to stdout until it finishes; its error is raised here.
export async function streamRequest(root: string, env: NodeJS.ProcessEnv, id: string): Promise<RequestRecord> {
  const path = requestLogPath(root, id);
  let pending = "";
  beginStreaming();
  const readNew = fileTailer(path);
  try {
    for (;;) {
      if (wasInterrupted()) {
        const short = id.slice(0, 8);
        outln("⚙︎ Request will continue running asynchronously.");
        outln(`├── View logs: sky api logs ${short}`);
        outln(`├── Or, visit: ${serverUrl(env)}/api/stream?request_id=${short}`);
        outln(`└── To cancel the request, run: sky api cancel ${short}`);
        outln();
        throw new Abort(true);
      }
      let r = readRequest(root, id);
      // The worker writes its final status, then exits: a record read just before that write, checked
      // against a process that has just exited, is not a dead executor. Read it once more first.
      if (r !== null && !TERMINAL.includes(r.status) && r.pid !== null && !processAlive(r.pid)) r = readRequest(root, id);
      pending += readNew();
      const nl = pending.lastIndexOf("\n");
      if (nl >= 0) {
        out(pending.slice(0, nl + 1));
        pending = pending.slice(nl + 1);
      }
      const dead = r !== null && !TERMINAL.includes(r.status) && r.pid !== null && !processAlive(r.pid);
      if (r === null || TERMINAL.includes(r.status) || dead) {
        pending += readNew();
        if (pending !== "") out(pending.endsWith("\n") ? pending : pending + "\n");
        if (r === null) throw new SkyException("RuntimeError", `Request ${id} not found.`);
        if (dead) throw new SkyException("RuntimeError", `Request ${id} failed: its executor died.`);
        if (r.status === "FAILED" && r.error) throw new SkyException(r.error.pyClass, r.error.message);
        if (r.status === "CANCELLED")
          throw new SkyException("sky.exceptions.RequestCancelledByUserError", `Request ${id} cancelled by user.`);
        return r;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  } finally {
    endStreaming();
  }
}
