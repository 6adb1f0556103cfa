// The proxy (issue 12, item 7): latency it adds per request against a direct connection to rank 0 from inside
// the host's network, and requests per second through it with one and with two replicas behind it, the
// double taking a fixed time per request (faults.server.requestTimeMs) so that a replica's capacity is known.
// The same client program (load.ts) runs in both places: in rank 0's network namespace for the direct path,
// on this machine for the proxy.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { repoRoot } from "../test/sim/sim.js";
import type { Cloud } from "./cloud.js";
import type { LoadResult } from "./load.js";
import type { Running } from "./proc.js";
import type { Results } from "./results.js";
import { fmtMs } from "./stats.js";

export interface ProxyOptions {
  latencyRequests: number;
  throughputRequests: number;
  iterations: number;
  enforce: boolean;
}

/** The double's time per request for the throughput runs: one replica at capacity answers 50 a second. */
const REQUEST_TIME_MS = 20;
const CONCURRENCY = 8;
const PATH = "/v1/chat/completions";

export async function proxy(cloud: Cloud, results: Results, opts: ProxyOptions): Promise<void> {
  // One v6e-4 replica, and `--nodes 2`: two single-host v6e-4 replicas, each its own cluster.
  await Promise.all([
    cloud.must(["up", "-n", "bench-p1", "--accelerator", "v6e-4", "-q"]),
    cloud.must(["up", "-n", "bench-p2", "--nodes", "2", "-q"]),
  ]);
  const p1 = await openProxy(cloud, "bench-p1");
  const p2 = await openProxy(cloud, "bench-p2");
  try {
    const head = cloud.productHosts("bench-p2", 0)[0];
    const headHost = (await cloud.clusterHosts("bench-p2")).find((h) => h.internalIp === head?.internalIp);
    if (!head || !headHost) throw new Error("bench-p2 has no rank 0");
    const direct = (n: number, c: number, fresh = false) => runLoad(`http://${head.internalIp}:30000${PATH}`, n, c, headHost.netns, fresh);
    const proxied = (p: OpenedProxy, n: number, c: number) => runLoad(`${p.url}${PATH}`, n, c);

    // Latency: one request at a time, the two paths alternating in halves so that drift hits both alike.
    const half = Math.ceil(opts.latencyRequests / 2);
    const lat = { direct: [] as number[], proxied: [] as number[], fresh: [] as number[] };
    for (let k = 0; k < 2; k++) {
      lat.direct.push(...(await direct(half, 1)).latenciesMs);
      lat.proxied.push(...(await proxied(p2, half, 1)).latenciesMs);
      lat.fresh.push(...(await direct(half, 1, true)).latenciesMs);
    }
    const d = results.add(
      "proxy.latency.direct",
      "ms",
      lat.direct,
      "POST /v1/chat/completions to rank 0 from inside its host's network namespace, one at a time",
    );
    const p = results.add("proxy.latency.proxied", "ms", lat.proxied, "the same through `tpu-deploy proxy` (2 replicas) on this machine");
    // Not a target: the proxy opens a new SSH channel, and so a new TCP connection from sshd to the server, for
    // every request, while the direct client keeps its connection; this shows what that set-up alone costs.
    results.add(
      "proxy.latency.directNewConnection",
      "ms",
      lat.fresh,
      "the direct path again, with a new TCP connection for every request (no keep-alive)",
    );
    const addedMedian = p.summary.median - d.summary.median;
    const addedP99 = p.summary.p99 - d.summary.p99;
    results.add("proxy.latency.addedMedian", "ms", [addedMedian], "median proxied − median direct");
    results.add("proxy.latency.addedP99", "ms", [addedP99], "p99 proxied − p99 direct");
    const tag = opts.enforce ? "" : " (smoke: not enforced)";
    results.target(
      `proxy adds under 2 ms per request at the median${tag}`,
      addedMedian < 2,
      `+${fmtMs(addedMedian)} at the median (${fmtMs(d.summary.median)} → ${fmtMs(p.summary.median)}), +${fmtMs(addedP99)} at p99 over ${lat.proxied.length} requests`,
    );

    // Throughput: a fixed time per request in the engine; CONCURRENCY requests in flight.
    await cloud.sim.setFaults({ server: { loadDelayMs: 0, requestTimeMs: REQUEST_TIME_MS } });
    const rps = { one: [] as number[], two: [] as number[], direct: [] as number[] };
    const perSecond = (r: LoadResult) => {
      if (r.failed > 0) throw new Error(`throughput run had ${r.failed} failed request(s): ${JSON.stringify(r.problems)}`);
      return r.ok / (r.wallMs / 1000);
    };
    for (let i = 0; i < opts.iterations; i++) {
      rps.direct.push(perSecond(await direct(opts.throughputRequests, CONCURRENCY)));
      rps.one.push(perSecond(await proxied(p1, opts.throughputRequests, CONCURRENCY)));
      rps.two.push(perSecond(await proxied(p2, opts.throughputRequests, CONCURRENCY)));
    }
    await cloud.sim.setFaults({ server: { loadDelayMs: 0 } });
    const how = `${opts.throughputRequests} requests, ${CONCURRENCY} in flight, the double taking ${REQUEST_TIME_MS} ms per request one at a time`;
    results.add("proxy.throughput.direct", "req/s", rps.direct, `one replica's rank 0 from inside its network: ${how}`);
    const one = results.add("proxy.throughput.oneReplica", "req/s", rps.one, `through the proxy, 1 replica: ${how}`);
    const two = results.add("proxy.throughput.twoReplicas", "req/s", rps.two, `through the proxy, 2 replicas: ${how}`);
    const ratio = two.summary.median / one.summary.median;
    results.add("proxy.throughput.ratio", "x", [ratio], "median two replicas / median one replica");
    results.target(
      `two replicas at least 1.8× one replica's throughput${tag}`,
      ratio >= 1.8,
      `${two.summary.median.toFixed(1)} vs ${one.summary.median.toFixed(1)} req/s (${ratio.toFixed(2)}×); direct to one replica ${results.get("proxy.throughput.direct")?.summary.median.toFixed(1)} req/s`,
    );
  } finally {
    await cloud.sim.setFaults({ server: { loadDelayMs: 0 } });
    const answered = await p2.close();
    await p1.close();
    if (answered) results.note(`requests each replica answered through the 2-replica proxy: ${answered}`);
  }
  await Promise.all([cloud.must(["down", "bench-p1", "-y", "-q"]), cloud.must(["down", "bench-p2", "-y", "-q"])]);
}

interface OpenedProxy {
  url: string;
  /** Stops it (SIGINT) and returns what it says each replica answered. */
  close(): Promise<string | undefined>;
}

async function openProxy(cloud: Cloud, name: string): Promise<OpenedProxy> {
  const run: Running = cloud.cli(["proxy", name, "--local-port", "0"]);
  const line = await run.waitFor(/^http:\/\/127\.0\.0\.1:\d+$/, { timeoutMs: 60_000 });
  return {
    url: line.text,
    async close() {
      run.child.kill("SIGINT");
      const r = await run.done;
      return /answered: (.*)/.exec(r.stderr)?.[1];
    },
  };
}

/** load.ts as its own process; in a host's network namespace when `netns` is given. */
function runLoad(url: string, n: number, concurrency: number, netns?: string, fresh = false): Promise<LoadResult> {
  const load = join(repoRoot(), "dist", "bench", "load.js");
  const argv = [process.execPath, load, url, String(n), String(concurrency), "10", ...(fresh ? ["fresh"] : [])];
  const [cmd = "", ...args] = netns ? ["ip", "netns", "exec", netns, ...argv] : argv;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.once("error", reject);
    child.once("close", (code) => {
      if (code !== 0) return reject(new Error(`load.js ${url} exited ${code}: ${err}`));
      try {
        const r = JSON.parse(out) as LoadResult;
        if (r.latenciesMs.length === 0) return reject(new Error(`load.js ${url}: no answers (${JSON.stringify(r.problems)})`));
        resolve(r);
      } catch (e) {
        reject(new Error(`load.js ${url} printed ${JSON.stringify(out.slice(0, 200))}: ${String(e)}`));
      }
    });
  });
}
