// The HTTP client of the proxy benchmark, a program of its own so that the same code runs both inside a
// simulated host's network namespace (`ip netns exec … node load.js`: the direct connection to rank 0) and on
// this machine (through `tpu-deploy proxy`). Sends N small chat requests, `concurrency` at a time, each
// connection kept alive as a real client would, and prints one JSON line: every latency and the wall time.
//   node dist/bench/load.js URL N CONCURRENCY [WARMUP] [fresh]
// `fresh`: a new TCP connection for every request (no keep-alive), to show what a connection's set-up costs.
import { Agent, request } from "node:http";

export interface LoadResult {
  /** Per request, from sending it to the last byte of the answer, ms (warm-up requests excluded). */
  latenciesMs: number[];
  /** From the first measured request to the last answer, ms. */
  wallMs: number;
  ok: number;
  failed: number;
  /** Status codes other than 200, and errors, with how often each happened. */
  problems: Record<string, number>;
}

const BODY = JSON.stringify({ model: "Qwen/Qwen3-8B", messages: [{ role: "user", content: "ping" }], max_tokens: 1 });

function once(url: URL, agent: Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: "POST",
        agent,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(BODY) },
        timeout: 30_000,
      },
      (res) => {
        res.on("data", () => undefined);
        res.on("end", () => resolve(res.statusCode ?? 0));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timed out after 30 s")));
    req.on("error", reject);
    req.end(BODY);
  });
}

export async function load(target: string, n: number, concurrency: number, warmup: number, fresh = false): Promise<LoadResult> {
  const url = new URL(target);
  const agent = new Agent({ keepAlive: !fresh, maxSockets: concurrency });
  const problems: Record<string, number> = {};
  const note = (what: string) => {
    problems[what] = (problems[what] ?? 0) + 1;
  };
  for (let i = 0; i < warmup; i++) await once(url, agent).catch(() => 0);
  const latenciesMs: number[] = [];
  let next = 0;
  let ok = 0;
  let failed = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < n) {
      next++;
      const s = performance.now();
      try {
        const status = await once(url, agent);
        latenciesMs.push(performance.now() - s);
        if (status === 200) ok++;
        else {
          failed++;
          note(`HTTP ${status}`);
        }
      } catch (err) {
        failed++;
        note((err as Error).message);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const wallMs = performance.now() - t0;
  agent.destroy();
  return { latenciesMs, wallMs, ok, failed, problems };
}

if (process.argv[1]?.endsWith("load.js")) {
  const [url, n, c, w, mode] = process.argv.slice(2);
  if (!url || !n || !c) {
    process.stderr.write("usage: load.js URL N CONCURRENCY [WARMUP]\n");
    process.exit(2);
  }
  const r = await load(url, Number(n), Number(c), Number(w ?? 0), mode === "fresh");
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
