// Which host key each host must offer, and pinning what was learned. The Cloud TPU API's guest attributes
// say which keys each v6e worker generated at first boot (gcloud reads them the same way; hostkeys-sglang-
// facts.md §A); they appear a little after boot, so they are polled for a bounded time. Where the API has
// none (TPU7x, which it does not serve; guest attributes disabled; API unreachable) the first key a host
// offers is trusted, pinned, and reported: a warning and a history event. Every later connection checks it.
import { describeHostKey, type HostKey, type HostKeyPolicy, type HostKeySource, hostKeysFromGuestAttributes } from "../core/host-keys.js";
import { formatDuration } from "../core/duration.js";
import { PIN_HOLD_MS } from "../core/lock.js";
import { addEvent, type HostRecord, hostIdentity } from "../core/state.js";
import { CloudApiError, LockedError, OperationError, SshError } from "../errors.js";
import { type AppContext, sleep } from "./context.js";

/** A host trusted on first use: the key it offered, and why nothing better was known. */
export interface FirstUse {
  alias: string;
  key: HostKey;
  why: string;
}

/** The policy for a host recorded in the state: its pinned keys, or first use for a state written before pinning. */
export function recordedPolicy(h: HostRecord): HostKeyPolicy {
  return h.hostKeys && h.hostKeys.length > 0
    ? { kind: "pinned", keys: h.hostKeys, from: h.hostKeysFrom ?? "first-use" }
    : { kind: "first-use" };
}

/** The TPU worker each host is, by TPU node name and worker number. */
export interface WorkerRef {
  node: string;
  workerId: number;
}

/** keys: the API vouches for them; missing: it answered without keys (maybe not yet); error: it failed. */
export type ApiKeys = { kind: "keys"; keys: HostKey[] } | { kind: "missing" } | { kind: "error"; why: string };

// GCE allows about 10 guest-attribute queries per minute per VM; 3 s growing to 10 s stays under that.
const FIRST_POLL_MS = 3_000;
const MAX_POLL_MS = 10_000;

/**
 * Each host's keys from GetGuestAttributes, one call per TPU node per round. Hosts in `waitFor` whose keys
 * are still missing are asked again until `waitMs` has passed; an API error is final for its node.
 */
export async function hostKeysFromTpuApi(
  ctx: AppContext,
  workers: ReadonlyMap<string, WorkerRef>,
  opts: { waitMs: number; waitFor: ReadonlySet<string> },
): Promise<Map<string, ApiKeys>> {
  const api = await ctx.tpuApi();
  const out = new Map<string, ApiKeys>();
  const deadline = Date.now() + opts.waitMs;
  let ask = [...workers.keys()];
  let pause = FIRST_POLL_MS;
  let told = false;
  for (;;) {
    const nodes = [...new Set(ask.map((alias) => workers.get(alias)?.node ?? ""))];
    await Promise.all(
      nodes.map(async (node) => {
        let answer: ((workerId: number) => ApiKeys) | undefined;
        try {
          const perWorker = hostKeysFromGuestAttributes(await api.getGuestAttributes(node, { signal: ctx.signal }));
          answer = (w) => {
            const keys = perWorker[w] ?? [];
            return keys.length > 0 ? { kind: "keys", keys } : { kind: "missing" };
          };
        } catch (err) {
          if (!(err instanceof CloudApiError)) throw err;
          answer = () => ({ kind: "error", why: `Cloud TPU API unavailable: ${err.message}` });
        }
        for (const alias of ask) {
          const w = workers.get(alias);
          if (w?.node === node) out.set(alias, answer(w.workerId));
        }
      }),
    );
    ask = [...opts.waitFor].filter((alias) => out.get(alias)?.kind === "missing");
    const left = deadline - Date.now();
    if (ask.length === 0 || left <= 0) return out;
    if (!told) {
      ctx.report.phase(`waiting up to ${formatDuration(left)} for the SSH host keys of ${ask.join(", ")} to appear in the Cloud TPU API`);
      told = true;
    }
    await sleep(Math.min(pause, left), ctx.signal);
    pause = Math.min(MAX_POLL_MS, Math.round(pause * 1.5));
  }
}

/** The policy for a host found by discovery: the API's keys, else its pins in the state, else first use. */
export function discoveredPolicy(api: ApiKeys | undefined, recorded: HostRecord | undefined): HostKeyPolicy {
  if (api?.kind === "keys") return { kind: "pinned", keys: api.keys, from: "tpu-api" };
  return recorded ? recordedPolicy(recorded) : { kind: "first-use" };
}

/** What to record after connecting under a policy: the keys that were checked, or the one trusted now. */
export function pinnedAfter(policy: HostKeyPolicy, offered: HostKey | undefined): { hostKeys: HostKey[]; hostKeysFrom: HostKeySource } {
  if (policy.kind === "pinned") return { hostKeys: [...policy.keys], hostKeysFrom: policy.from };
  return { hostKeys: offered ? [offered] : [], hostKeysFrom: "first-use" };
}

/** One line for the warning and the history event: who was trusted, with which key, and why. */
export function firstUseNotice(hosts: readonly FirstUse[]): string {
  const byWhy = new Map<string, FirstUse[]>();
  for (const h of hosts) byWhy.set(h.why, [...(byWhy.get(h.why) ?? []), h]);
  const parts = [...byWhy].map(([why, hs]) => `${why}: ${hs.map((h) => `${h.alias} ${describeHostKey(h.key)}`).join(", ")}`);
  return `SSH host keys trusted on first use, not verified (${parts.join("; ")}); pinned now, and checked on every later connection`;
}

/** The error every command gives for hosts whose key is not the pinned one; nothing has been sent to them. */
export function hostKeyChangedError(name: string, errors: readonly SshError[]): OperationError {
  const lines = errors.map((e) => e.message);
  const message = lines.length === 1 ? (lines[0] ?? "") : `host keys changed on ${lines.length} hosts:\n  ${lines.join("\n  ")}`;
  return new OperationError("ssh_failed", message, {
    cause: errors[0],
    hint:
      `Nothing was sent to ${errors.length === 1 ? "that host" : "those hosts"}. Someone may be intercepting the connection, or the address ` +
      `now belongs to another machine. If ${name}'s hosts were re-created outside tpu-deploy, \`tpu-deploy down ${name}\` ` +
      "(`--replica R` for that replica only) then `tpu-deploy up` start again on fresh hosts whose keys are checked; " +
      "otherwise treat it as a security incident.",
  });
}

export function isHostKeyChange(err: unknown): boolean {
  const e = err instanceof OperationError ? err.cause : err;
  return e instanceof SshError && e.reason === "host-key";
}

/**
 * The hosts, each without keys given those pinned for it in the state file meanwhile (a probe earlier in
 * this run that trusted it on first use, or another command): a caller holding an older copy of the state
 * then checks the pin rather than trusting the host on first use again.
 */
export function withPinsOnDisk<H extends HostRecord>(ctx: AppContext, name: string, hosts: readonly H[]): H[] {
  if (hosts.every((h) => h.hostKeys?.length)) return [...hosts];
  let state: ReturnType<typeof ctx.store.read>;
  try {
    state = ctx.store.read(name);
  } catch {
    return [...hosts]; // a damaged state file: nothing known beyond what the caller has
  }
  const pinned = new Map(
    (state?.replicas ?? []).flatMap((r) => r.hosts.flatMap((h) => (h.hostKeys?.length ? [[hostIdentity(h), h] as const] : []))),
  );
  return hosts.map((h) => {
    const p = h.hostKeys?.length ? undefined : pinned.get(hostIdentity(h));
    return p ? { ...h, hostKeys: p.hostKeys, hostKeysFrom: p.hostKeysFrom } : h;
  });
}

/**
 * Pins keys trusted on first use outside discovery (a state written before pinning) and records the
 * warning, one history event per replica whose hosts were pinned. Under this process's lock the state is
 * written at once; otherwise only if the lock is free: a run holding it rediscovers and pins the hosts itself.
 */
export function pinFirstUse(ctx: AppContext, name: string, learned: readonly (FirstUse & { host: HostRecord })[]): void {
  const write = (): void => {
    const s = ctx.store.read(name);
    if (!s) return;
    const keys = new Map(learned.map((l) => [hostIdentity(l.host), l]));
    const events: { replica: number; detail: string }[] = [];
    const replicas = s.replicas.map((r) => {
      const pinned: FirstUse[] = [];
      const hosts = r.hosts.map((h) => {
        const l = h.hostKeys?.length ? undefined : keys.get(hostIdentity(h));
        if (!l) return h;
        pinned.push(l);
        return { ...h, hostKeys: [l.key], hostKeysFrom: "first-use" as const };
      });
      if (pinned.length === 0) return r;
      events.push({ replica: r.replica, detail: firstUseNotice(pinned) });
      return { ...r, hosts };
    });
    if (events.length === 0) return;
    let next = { ...s, replicas };
    for (const e of events) next = addEvent(next, { event: "host-keys-first-use", ...e }, ctx.now());
    ctx.store.write(next);
  };
  if (ctx.store.holds(name)) {
    write();
    return;
  }
  let lock: ReturnType<typeof ctx.store.lock>;
  try {
    lock = ctx.store.lock(name, "tpu-deploy (pinning host keys)", { maxHoldMs: PIN_HOLD_MS });
  } catch (err) {
    if (err instanceof LockedError) {
      ctx.report.debug(`${name}: host keys not pinned now (${err.message})`);
      return;
    }
    throw err;
  }
  try {
    write();
  } finally {
    lock.release();
  }
}
