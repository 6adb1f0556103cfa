// The upstreams of the local proxy (one per replica: its rank 0 server, through that replica's own SSH
// session) and which one takes the next request: least outstanding requests, ties in turn. An upstream
// that refuses a connection or fails a probe is out until a probe succeeds again.
import type { Duplex } from "node:stream";

export interface Upstream {
  /** For people and events, e.g. `llama-serve/0 rank 0 (10.0.0.2:30000)`. */
  id: string;
  /** A new byte stream to that replica's rank 0 server (an SSH channel); kept alive for later requests by the proxy's agent. */
  open(): Promise<Duplex>;
  /** True when the server answers; the signal ends a probe that took too long. */
  probe(signal: AbortSignal): Promise<boolean>;
}

export type PoolEvent = { kind: "out"; id: string; reason: string } | { kind: "back"; id: string };

export interface UpstreamStat {
  id: string;
  healthy: boolean;
  outstanding: number;
  /** Requests it answered (a response started), since the proxy started. */
  answered: number;
}

export interface PoolOptions {
  /** How often an upstream that is out is probed. */
  probeIntervalMs: number;
  /** How often an upstream in rotation is probed (a dead server is also noticed by the next request). */
  healthyProbeIntervalMs: number;
  probeTimeoutMs: number;
  onEvent?: ((event: PoolEvent) => void) | undefined;
}

interface Member {
  upstream: Upstream;
  healthy: boolean;
  outstanding: number;
  answered: number;
  probing: AbortController | undefined;
  timer: NodeJS.Timeout | undefined;
}

export class UpstreamPool {
  private readonly members: Member[];
  private turn = 0;
  private closed = false;

  constructor(
    upstreams: readonly Upstream[],
    private readonly opts: PoolOptions,
  ) {
    if (upstreams.length === 0) throw new RangeError("the proxy needs at least one upstream");
    this.members = upstreams.map((upstream) => ({
      upstream,
      healthy: true,
      outstanding: 0,
      answered: 0,
      probing: undefined,
      timer: undefined,
    }));
    for (const m of this.members) this.schedule(m);
  }

  /**
   * The upstream for the next request, not one of `tried`: the least busy in rotation. When every
   * candidate is out, the least busy of those anyway: a probe may lag, and refusing outright would make
   * a single-replica proxy worse than a plain tunnel.
   */
  pick(tried: ReadonlySet<string>): Upstream | undefined {
    const candidates = this.members.filter((m) => !tried.has(m.upstream.id));
    const healthy = candidates.filter((m) => m.healthy);
    const pool = healthy.length > 0 ? healthy : candidates;
    let best: Member | undefined;
    let bestAt = 0;
    for (let k = 0; k < this.members.length; k++) {
      const at = (this.turn + k) % this.members.length;
      const m = this.members[at];
      if (m === undefined || !pool.includes(m)) continue;
      if (best === undefined || m.outstanding < best.outstanding) {
        best = m;
        bestAt = at;
      }
    }
    if (best === undefined) return undefined;
    this.turn = bestAt + 1;
    return best.upstream;
  }

  /** Counts a request against the upstream until the returned function is called (once is enough). */
  begin(id: string): () => void {
    const m = this.member(id);
    m.outstanding++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      m.outstanding--;
    };
  }

  /** The upstream started an answer to a request. */
  answered(id: string): void {
    this.member(id).answered++;
  }

  /** Takes the upstream out of rotation; probes bring it back. */
  fail(id: string, reason: string): void {
    const m = this.member(id);
    if (!m.healthy || this.closed) return;
    m.healthy = false;
    this.opts.onEvent?.({ kind: "out", id, reason });
    this.schedule(m);
  }

  stats(): UpstreamStat[] {
    return this.members.map((m) => ({ id: m.upstream.id, healthy: m.healthy, outstanding: m.outstanding, answered: m.answered }));
  }

  close(): void {
    this.closed = true;
    for (const m of this.members) {
      clearTimeout(m.timer);
      m.probing?.abort();
    }
  }

  private member(id: string): Member {
    const m = this.members.find((x) => x.upstream.id === id);
    if (!m) throw new RangeError(`no upstream ${id}`);
    return m;
  }

  private schedule(m: Member): void {
    clearTimeout(m.timer);
    if (this.closed) return;
    const wait = m.healthy ? this.opts.healthyProbeIntervalMs : this.opts.probeIntervalMs;
    m.timer = setTimeout(() => void this.probe(m), wait);
    // The listening server keeps the process alive, not a probe timer.
    m.timer.unref();
  }

  private async probe(m: Member): Promise<void> {
    if (this.closed || m.probing) return;
    const ac = new AbortController();
    m.probing = ac;
    const deadline = setTimeout(() => ac.abort(new Error(`no answer within ${this.opts.probeTimeoutMs} ms`)), this.opts.probeTimeoutMs);
    let ok = false;
    try {
      ok = await Promise.race([
        m.upstream.probe(ac.signal),
        new Promise<boolean>((resolve) => ac.signal.addEventListener("abort", () => resolve(false), { once: true })),
      ]);
    } catch {
      ok = false;
    } finally {
      clearTimeout(deadline);
      m.probing = undefined;
    }
    if (this.closed) return;
    if (ok && !m.healthy) {
      m.healthy = true;
      this.opts.onEvent?.({ kind: "back", id: m.upstream.id });
    } else if (!ok && m.healthy) {
      this.fail(m.upstream.id, ac.signal.aborted ? "probe timed out" : "probe failed");
      return;
    }
    this.schedule(m);
  }
}
