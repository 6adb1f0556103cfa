// Proving the ports the servers need are open between the hosts before any server starts: sglang-jax would
// hang silently on a blocked rendezvous port (its handshake has no timeout, docs/upstream/sglang-jax.md §2),
// and libtpu would fail to form the slice without its inter-host port.
import { PassThrough } from "node:stream";
import type { ExecResult, HostSession } from "../adapters/ssh/session.js";
import { type PortProbeLine, parsePortProbeLine, portProbeCommand } from "../core/remote.js";
import type { HostRecord } from "../core/state.js";
import { OperationError } from "../errors.js";
import type { AppContext } from "./context.js";
import { sessionOf } from "./start.js";

/**
 * libtpu's inter-host port (the one TPU_PROCESS_ADDRESSES names, 8471: docs/upstream/tpu7x-worker-identity.md):
 * every host of the slice talks to every other on it.
 */
export const LIBTPU_PORT = 8471;

/** Each connection's bound: a port a firewall drops is "timed out" after this long, all tried at once. */
const CONNECT_TIMEOUT_S = 3;
/** How long a probe lives at most: every host must be listening by then (64 slow hosts take seconds). */
const WINDOW_S = 120;

interface Target {
  address: string;
  to: HostRecord;
  kind: "rendezvous" | "libtpu";
}

interface Probe {
  h: HostRecord;
  targets: Target[];
  stdin: PassThrough;
  listening: Promise<void>;
  /** Resolves as the probe prints its result (then in `result`). */
  answered: Promise<void>;
  result?: Record<string, string>;
  bindFailed?: { port: number; why: string };
  /** Set as the probe says `listening`. */
  isListening: boolean;
  output: string;
  run: Promise<ExecResult>;
  /** Settles (never rejects) when the probe's program ended, however. */
  ended: Promise<void>;
}

/**
 * Proves, with one program and one command per host, all at once:
 * - the rendezvous ports (P, P+5, P+6) on rank 0, from every other rank;
 * - libtpu's port between every pair of hosts.
 * Every host first binds its ports (a port something else holds is named), then, once all listen, every host
 * connects to all of its targets at once, each connection bounded. A blocked pair is named with both ranks.
 */
export async function checkPorts(
  ctx: AppContext,
  sessions: Map<string, HostSession>,
  hosts: HostRecord[],
  rendezvousPorts: number[],
): Promise<void> {
  const rank0 = hosts.find((h) => h.rank === 0);
  if (!rank0 || hosts.length < 2 || rendezvousPorts.length === 0) return;
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  const probes = hosts.map((h) => startProbe(sessions, h, hosts, rank0, rendezvousPorts, stop.signal));
  const endAll = async () => {
    for (const p of probes) p.stdin.end();
    return await Promise.allSettled(probes.map((p) => p.run));
  };
  try {
    // Connect only once every host listens: a port tried before its listener is up would read as closed.
    await Promise.all(probes.map((p) => Promise.race([p.listening, p.ended])));
    if (probes.every((p) => p.isListening)) {
      for (const p of probes) p.stdin.write("go\n");
      await Promise.all(probes.map((p) => Promise.race([p.answered, p.ended])));
    }
    const runs = await endAll();
    for (const r of runs) if (r.status === "rejected") throw r.reason;
    throwBindFailures(probes, rendezvousPorts);
    const broken = probes.find((p) => p.result === undefined);
    if (broken) {
      throw new OperationError(
        "port_blocked",
        `rank ${broken.h.rank} (${broken.h.sshAlias}): the port probe printed ${JSON.stringify(broken.output.slice(0, 200))}`,
      );
    }
    throwBlocked(probes, rendezvousPorts);
  } finally {
    await endAll();
    ctx.signal.removeEventListener("abort", onAbort);
  }
}

function startProbe(
  sessions: Map<string, HostSession>,
  h: HostRecord,
  hosts: HostRecord[],
  rank0: HostRecord,
  rendezvousPorts: number[],
  signal: AbortSignal,
): Probe {
  const targets: Target[] = [
    ...(h === rank0 ? [] : rendezvousPorts.map((p): Target => ({ address: `${rank0.internalIp}:${p}`, to: rank0, kind: "rendezvous" }))),
    ...hosts.filter((x) => x !== h).map((x): Target => ({ address: `${x.internalIp}:${LIBTPU_PORT}`, to: x, kind: "libtpu" })),
  ];
  const ports = [...new Set([...(h === rank0 ? rendezvousPorts : []), LIBTPU_PORT])];
  let markListening: () => void = () => undefined;
  let markAnswered: () => void = () => undefined;
  const probe: Probe = {
    h,
    targets,
    stdin: new PassThrough(),
    listening: new Promise<void>((r) => {
      markListening = r;
    }),
    answered: new Promise<void>((r) => {
      markAnswered = r;
    }),
    isListening: false,
    output: "",
    run: Promise.resolve({ code: 0, stdout: "", stderr: "" }),
    ended: Promise.resolve(),
  };
  let pending = "";
  const onLine = (l: PortProbeLine | undefined) => {
    if (l?.kind === "listening") {
      probe.isListening = true;
      markListening();
    } else if (l?.kind === "result") {
      probe.result = l.answer;
      markAnswered();
    } else if (l?.kind === "bind-failed") probe.bindFailed = { port: l.port, why: l.why };
  };
  probe.run = sessionOf(sessions, h).exec(
    portProbeCommand(ports, [...new Set(targets.map((t) => t.address))], CONNECT_TIMEOUT_S, WINDOW_S),
    {
      timeoutMs: (WINDOW_S + 10) * 1000,
      signal,
      stdin: probe.stdin,
      onStdout: (text) => {
        probe.output += text;
        pending += text;
        for (let i = pending.indexOf("\n"); i >= 0; i = pending.indexOf("\n")) {
          onLine(parsePortProbeLine(pending.slice(0, i)));
          pending = pending.slice(i + 1);
        }
      },
    },
  );
  probe.ended = probe.run.then(
    () => undefined,
    () => undefined,
  );
  return probe;
}

function throwBindFailures(probes: Probe[], rendezvousPorts: number[]): void {
  const rendezvous = probes.find((p) => p.bindFailed && rendezvousPorts.includes(p.bindFailed.port) && p.bindFailed.port !== LIBTPU_PORT);
  if (rendezvous?.bindFailed) {
    throw new OperationError(
      "port_blocked",
      `rank 0 cannot listen on its rendezvous port: bind-failed ${rendezvous.bindFailed.port} ${rendezvous.bindFailed.why}`,
      { hint: "something else holds the port on rank 0; choose another --dist-port or stop it" },
    );
  }
  const taken = probes.filter((p) => p.bindFailed);
  if (taken.length > 0) {
    throw new OperationError(
      "port_blocked",
      `libtpu's port ${LIBTPU_PORT} is taken on ${taken.map((p) => `rank ${p.h.rank} (${p.h.sshAlias})`).join(", ")}`,
      { hint: "something else (an old server?) holds it: tpu-deploy restart stops this deployment's servers; otherwise stop that process" },
    );
  }
}

function throwBlocked(probes: Probe[], rendezvousPorts: number[]): void {
  const blocked = { rendezvous: [] as string[], libtpu: [] as string[] };
  for (const p of probes) {
    for (const t of p.targets) {
      const why = p.result?.[t.address];
      if (why !== "ok")
        blocked[t.kind].push(`rank ${p.h.rank} (${p.h.internalIp}) → rank ${t.to.rank} ${t.address}: ${why ?? "not tried"}`);
    }
  }
  if (blocked.rendezvous.length > 0) {
    throw new OperationError("port_blocked", `rendezvous ports are not reachable between hosts:\n  ${blocked.rendezvous.join("\n  ")}`, {
      hint: `open TCP ${rendezvousPorts.join(", ")} between the hosts (a VPC firewall rule for the cluster's network); sglang-jax would hang silently`,
    });
  }
  if (blocked.libtpu.length > 0) {
    throw new OperationError("port_blocked", `libtpu's inter-host port is not reachable between hosts:\n  ${blocked.libtpu.join("\n  ")}`, {
      hint: `open TCP ${LIBTPU_PORT} between every pair of the slice's hosts (a VPC firewall rule for the cluster's network); libtpu would fail to form the slice`,
    });
  }
}
