// Proving the rendezvous ports are open between the hosts before any server starts: sglang-jax would
// hang silently on a blocked one (its handshake has no timeout, docs/upstream/sglang-jax.md §2).
import type { HostSession } from "../adapters/ssh/session.js";
import { parsePortAnswer, portConnectCommand, portListenCommand } from "../core/remote.js";
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
