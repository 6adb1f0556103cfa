// Proving the rendezvous ports are open between the hosts before any server starts: sglang-jax would
// hang silently on a blocked one (its handshake has no timeout, docs/upstream/sglang-jax.md §2).
import type { HostSession } from "../adapters/ssh/session.js";
import { parsePortAnswer, parseTargetsAnswer, portConnectCommand, portConnectManyCommand, portListenCommand } from "../core/remote.js";
import type { HostRecord } from "../core/state.js";
import { OperationError } from "../errors.js";
import { type AppContext, settleEach, sleep } from "./context.js";
import { CONCURRENCY, sessionOf } from "./start.js";

/**
 * Proves the rendezvous ports are open before anything starts: a short-lived listener on rank 0's
 * internal address for P, P+5 and P+6, and a connection to each from every other rank.
 */
export async function checkPorts(ctx: AppContext, sessions: Map<string, HostSession>, hosts: HostRecord[], ports: number[]): Promise<void> {
  const rank0 = hosts.find((h) => h.rank === 0);
  const others = hosts.filter((h) => h.rank !== 0);
  if (!rank0 || others.length === 0 || ports.length === 0) return;
  const listenSeconds = 30;
  const stopListener = new AbortController();
  const onAbort = () => stopListener.abort();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  // Connect only once every port is bound: a port tried before then is refused, and would be reported
  // as closed while a later one (tried after a dropped port's timeout) already answers.
  let heard = "";
  let markListening: () => void = () => undefined;
  const listening = new Promise<void>((resolve) => {
    markListening = resolve;
  });
  const listener = sessionOf(sessions, rank0).exec(portListenCommand(rank0.internalIp, ports, listenSeconds, others.length), {
    timeoutMs: (listenSeconds + 10) * 1000,
    signal: stopListener.signal,
    onStdout: (text) => {
      heard += text;
      if (/^listening$/m.test(heard)) markListening();
    },
  });
  let listenerDone = false;
  const listenerResult = listener.finally(() => {
    listenerDone = true;
  });
  await Promise.race([listening, listenerResult.catch(() => undefined)]);
  // Connectors retry while the listener starts; a port that times out is filtered, one refused is closed.
  const failures: string[] = [];
  const connectResults = await settleEach(others, CONCURRENCY, async (h) => {
    const s = sessionOf(sessions, h);
    for (let attempt = 0; ; attempt++) {
      const r = await s.exec(portConnectCommand(rank0.internalIp, ports, 3), { timeoutMs: 30_000, signal: ctx.signal });
      const answer = parsePortAnswer(r.stdout);
      if (answer === undefined)
        throw new OperationError(
          "port_blocked",
          `rank ${h.rank} (${h.internalIp}): the port probe printed ${JSON.stringify(r.stdout.slice(0, 200))} (exit ${r.code})`,
        );
      const bad = Object.entries(answer).filter(([, v]) => v !== "ok");
      // All refused: the listener is not up yet. Some refused, some not: a firewall rejects them.
      const listenerNotUp = bad.length === ports.length && bad.every(([, v]) => /refused/i.test(v));
      if (bad.length === 0) return;
      if (!listenerNotUp || attempt >= 20 || listenerDone) {
        for (const [port, why] of bad) failures.push(`rank ${h.rank} (${h.internalIp}) → rank 0 ${rank0.internalIp}:${port}: ${why}`);
        return;
      }
      await sleep(250, ctx.signal);
    }
  });
  if (failures.length > 0 || connectResults.some((r) => r.status === "rejected")) stopListener.abort();
  const l = await listenerResult.catch(() => undefined);
  ctx.signal.removeEventListener("abort", onAbort);
  for (const r of connectResults) if (r.status === "rejected") throw r.reason;
  if (l && l.code !== 0 && /bind-failed/.test(l.stdout)) {
    throw new OperationError("port_blocked", `rank 0 cannot listen on its rendezvous port: ${l.stdout.trim()}`, {
      hint: "something else holds the port on rank 0; choose another --dist-port or stop it",
    });
  }
  if (failures.length > 0) {
    throw new OperationError("port_blocked", `rendezvous ports are not reachable between hosts:\n  ${failures.join("\n  ")}`, {
      hint: `open TCP ${ports.join(", ")} between the hosts (a VPC firewall rule for the cluster's network); sglang-jax would hang silently`,
    });
  }
}

/**
 * libtpu's inter-host port (the one TPU_PROCESS_ADDRESSES names, 8471: docs/upstream/tpu7x-worker-identity.md):
 * every host of the slice talks to every other on it, so every host listens and every other connects,
 * all pairs at once, each connection bounded. A firewall rule that blocks it between two hosts is named.
 */
export const LIBTPU_PORT = 8471;

const CONNECT_TIMEOUT_S = 3;

export async function checkLibtpuPort(ctx: AppContext, sessions: Map<string, HostSession>, hosts: HostRecord[]): Promise<void> {
  if (hosts.length < 2) return;
  // Every listener must outlive the slowest connector: connectors run CONCURRENCY at a time and each tries
  // every other host in turn, each try bounded. With a fixed 30 s, a 64-host slice on slow hosts had its later
  // connectors find the first listeners already gone ("Connection refused") and failed a healthy slice. A long
  // window costs nothing: a listener exits as soon as every peer connected, and all are stopped on a failure.
  const listenSeconds = 30 + Math.ceil(hosts.length / CONCURRENCY) * (hosts.length - 1) * CONNECT_TIMEOUT_S;
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  let ready = 0;
  let allListening: () => void = () => undefined;
  const listening = new Promise<void>((resolve) => {
    allListening = resolve;
  });
  const listeners = hosts.map((h) => {
    let heard = "";
    let counted = false;
    return sessionOf(sessions, h)
      .exec(portListenCommand(h.internalIp, [LIBTPU_PORT], listenSeconds, hosts.length - 1), {
        timeoutMs: (listenSeconds + 10) * 1000,
        signal: stop.signal,
        onStdout: (text) => {
          heard += text;
          if (!counted && /^listening$/m.test(heard)) {
            counted = true;
            if (++ready === hosts.length) allListening();
          }
        },
      })
      .then((r) => ({ h, r }));
  });
  const settledListeners = Promise.allSettled(listeners);
  await Promise.race([listening, settledListeners]);
  const failures: string[] = [];
  const results = await settleEach(hosts, CONCURRENCY, async (h) => {
    const targets = hosts.filter((x) => x !== h);
    const r = await sessionOf(sessions, h).exec(
      portConnectManyCommand(
        targets.map((x) => x.internalIp),
        LIBTPU_PORT,
        CONNECT_TIMEOUT_S,
      ),
      { timeoutMs: 10_000 + targets.length * (CONNECT_TIMEOUT_S * 1000 + 500), signal: ctx.signal },
    );
    const answer = parseTargetsAnswer(r.stdout);
    if (answer === undefined)
      throw new OperationError("port_blocked", `rank ${h.rank}: the port probe printed ${JSON.stringify(r.stdout.slice(0, 200))}`);
    for (const x of targets) {
      const why = answer[x.internalIp];
      if (why !== "ok")
        failures.push(`rank ${h.rank} (${h.internalIp}) → rank ${x.rank} ${x.internalIp}:${LIBTPU_PORT}: ${why ?? "not tried"}`);
    }
  });
  if (failures.length > 0 || results.some((r) => r.status === "rejected")) stop.abort();
  const done = await settledListeners;
  ctx.signal.removeEventListener("abort", onAbort);
  for (const r of results) if (r.status === "rejected") throw r.reason;
  const bindFailed = done.flatMap((d) => (d.status === "fulfilled" && /bind-failed/.test(d.value.r.stdout) ? [d.value.h] : []));
  if (bindFailed.length > 0) {
    throw new OperationError(
      "port_blocked",
      `libtpu's port ${LIBTPU_PORT} is taken on ${bindFailed.map((h) => `rank ${h.rank} (${h.sshAlias})`).join(", ")}`,
      { hint: "something else (an old server?) holds it: tpu-deploy restart stops this deployment's servers; otherwise stop that process" },
    );
  }
  if (failures.length > 0) {
    throw new OperationError("port_blocked", `libtpu's inter-host port is not reachable between hosts:\n  ${failures.join("\n  ")}`, {
      hint: `open TCP ${LIBTPU_PORT} between every pair of the slice's hosts (a VPC firewall rule for the cluster's network); libtpu would fail to form the slice`,
    });
  }
}
