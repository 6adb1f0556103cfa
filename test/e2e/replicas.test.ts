// Replicas end to end on the simulated cloud: `up --nodes 2` on v6e is two single-host v6e-4 clusters, each
// serving the whole model alone; `--nodes 4 --replicas 2` is two v6e-16 slices; `proxy` balances across the
// replicas that serve; one replica preempted under load is taken out by the proxy, relaunched by itself,
// while the other never stops serving. What a replica served is read from the sglang-jax double's own
// counter (/get_server_info requests_served, asked on the replica's host), never from the proxy's word.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliResult, type E2E, serverInfo, startE2E } from "./helpers.js";

let e: E2E;

beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

interface ReplicaJson {
  replica: number;
  cluster: string;
  zone: string;
  phase: string;
  distInitAddr: string;
  hosts: { rank: number; workerId: number; internalIp: string; externalIp: string }[];
}

function ok(r: CliResult): CliResult {
  if (r.code !== 0) throw new Error(`exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr.slice(-4000)}`);
  return r;
}

async function up(args: string[]): Promise<{ layout: string; replicas: ReplicaJson[] }> {
  const r = ok(await e.cli(["up", ...args, "--json"]));
  return (r.json as { result: { layout: string; replicas: ReplicaJson[] } }).result;
}

/** The double's view of a replica, asked on its rank 0 host. */
async function replicaInfo(name: string, replica: number): Promise<Record<string, unknown>> {
  const r = e.replica(name, replica);
  const rank0 = r.hosts.find((h) => h.rank === 0);
  if (!rank0) throw new Error(`no rank 0 in replica ${replica}`);
  const host = Object.values((await e.sim.state()).hosts).find(
    (h) => h.alive && h.internalIp === rank0.internalIp && h.cluster === r.cluster,
  );
  if (!host) throw new Error(`rank 0 of replica ${replica} is not a live host of ${r.cluster}`);
  return await serverInfo(e.sim, host.id, rank0.internalIp);
}

/** Runs `tpu-deploy proxy` until stop(); resolves with its URL once it printed it. */
async function startProxy(name: string): Promise<{ url: string; stderr: () => string; stop: () => Promise<CliResult> }> {
  const ac = new AbortController();
  let err = "";
  let run: Promise<CliResult> | undefined;
  const url = await new Promise<string>((resolve, reject) => {
    run = e.cli(["proxy", name, "--local-port", "0"], {
      signal: ac.signal,
      onStdout: (text) => {
        const m = /^(http:\/\/127\.0\.0\.1:\d+)\n/.exec(text);
        if (m?.[1]) resolve(m[1]);
      },
      onStderr: (text) => {
        err = text;
      },
    });
    run.then((r) => reject(new Error(`proxy exited (${r.code}):\n${r.stderr}`)), reject);
  });
  const done = run as unknown as Promise<CliResult>;
  return {
    url,
    stderr: () => err,
    stop: async () => {
      ac.abort();
      return await done;
    },
  };
}

async function chat(url: string): Promise<number> {
  try {
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "Qwen/Qwen3-8B", messages: [{ role: "user", content: "hi" }] }),
      signal: AbortSignal.timeout(30_000),
    });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

describe("replicas", () => {
  it("up --nodes 2: two v6e-4 clusters, each --nnodes 1 --tp-size 4; 20 requests through proxy all succeed, both replicas served", async () => {
    const r = await up(["-n", "pair", "--nodes", "2"]);
    expect(r.layout).toMatch(/^2 replicas, each one v6e-4: 1 host, 4 chips, 128 GB HBM/);
    expect(r.replicas.map((x) => [x.cluster, x.phase, x.hosts.length])).toEqual([
      ["pair", "serving", 1],
      ["pair-r1", "serving", 1],
    ]);
    const sim = await e.sim.state();
    for (const x of r.replicas) {
      expect(sim.clusters[x.cluster]).toMatchObject({ accelerator: "tpu-v6e-4", numNodes: 1 });
      const info = await replicaInfo("pair", x.replica);
      expect(info).toMatchObject({ nnodes: 1, node_rank: 0, tp_size: 4, dist_init_addr: null });
    }
    const before = await Promise.all([0, 1].map(async (i) => Number((await replicaInfo("pair", i)).requests_served)));

    const proxy = await startProxy("pair");
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push(await chat(proxy.url));
    expect((await proxy.stop()).code).toBe(0);
    expect(statuses).toEqual(Array(20).fill(200));
    const served = await Promise.all([0, 1].map(async (i) => Number((await replicaInfo("pair", i)).requests_served) - (before[i] ?? 0)));
    expect(served[0]).toBeGreaterThan(0);
    expect(served[1]).toBeGreaterThan(0);
    expect((served[0] ?? 0) + (served[1] ?? 0)).toBe(20);

    const st = ok(await e.cli(["status", "pair", "--json"]));
    const dep = (st.json as { result: { deployments: { summary: string; replicas: { replica: number; status: string }[] }[] } }).result
      .deployments[0];
    expect(dep?.summary).toBe("2/2 replicas serving");
    expect(dep?.replicas.map((x) => [x.replica, x.status])).toEqual([
      [0, "serving"],
      [1, "serving"],
    ]);

    // One replica down, the other keeps serving; then the whole deployment, verified.
    const one = ok(await e.cli(["down", "pair", "--replica", "1", "-y", "--json"]));
    expect((one.json as { result: unknown }).result).toMatchObject({ name: "pair", verified: true, existed: true });
    expect((await e.sim.state()).clusters["pair-r1"]).toBeUndefined();
    expect(e.deployment("pair").replicas.map((x) => x.replica)).toEqual([0]);
    expect(await replicaInfo("pair", 0)).toMatchObject({ nnodes: 1 });
    ok(await e.cli(["down", "pair", "-y"]));
    const after = await e.sim.state();
    expect(Object.keys(after.clusters).filter((c) => c.startsWith("pair"))).toEqual([]);
    expect(e.state("pair")).toBeUndefined();
  });

  it("--nodes 4 --replicas 2: two v6e-16 slices, ranks by worker number in each, both serving", async () => {
    const r = await up(["-n", "quad", "--nodes", "4", "--replicas", "2"]);
    expect(r.replicas.map((x) => x.cluster)).toEqual(["quad", "quad-r1"]);
    const sim = await e.sim.state();
    for (const x of r.replicas) {
      expect(sim.clusters[x.cluster]).toMatchObject({ accelerator: "tpu-v6e-16" });
      const hosts = Object.values(sim.hosts).filter((h) => h.alive && h.cluster === x.cluster);
      expect(hosts).toHaveLength(4);
      for (const h of x.hosts) expect(h.rank).toBe(hosts.find((s) => s.internalIp === h.internalIp)?.workerId);
      const head = hosts.find((h) => h.workerId === 0);
      expect(x.distInitAddr).toBe(`${head?.internalIp}:10011`);
      const info = await replicaInfo("quad", x.replica);
      expect(info).toMatchObject({ nnodes: 4, tp_size: 16, dist_init_addr: x.distInitAddr });
    }
    ok(await e.cli(["down", "quad", "-y"]));
  });

  it("one spot replica preempted under load: the proxy takes it out, relaunch brings it back, the other never stops serving", async () => {
    const r = await up(["-n", "spotty", "--nodes", "2", "--spot", "--zone", "us-east5-a", "--zone", "us-east5-b"]);
    // Spot replicas start their failover in different zones: one wave in one zone does not take both.
    expect(r.replicas.map((x) => x.zone)).toEqual(["us-east5-a", "us-east5-b"]);
    const survivor = e.replica("spotty", 0);

    const proxy = await startProxy("spotty");
    const sent: { at: number; status: number }[] = [];
    let stop = false;
    const client = (async () => {
      while (!stop) {
        const at = Date.now();
        const pending = chat(proxy.url).then((status) => sent.push({ at, status }));
        await new Promise((res) => setTimeout(res, 200));
        void pending;
      }
    })();
    await new Promise((res) => setTimeout(res, 2_000));
    await e.sim.preempt("spotty-r1");
    const preemptedAt = Date.now();
    // The proxy notices (a refused connection or a failed probe) and says so.
    const t0 = Date.now();
    while (!/replica 1 .*out of rotation/.test(proxy.stderr()) && Date.now() - t0 < 30_000) await new Promise((res) => setTimeout(res, 50));
    expect(proxy.stderr()).toMatch(/replica 1 .*out of rotation/);
    const noticedAt = Date.now();

    const rel = await e.cli(["relaunch", "spotty", "--json"]);
    expect(rel.code, rel.stdout + rel.stderr).toBe(0);
    const report = (rel.json as { result: { replicas: { replica: number; verdict: string; action: string }[] } }).result;
    expect(report.replicas.map((x) => [x.replica, x.verdict, x.action])).toEqual([
      [0, "healthy", "none"],
      [1, "preempted", "relaunch"],
    ]);
    // The proxy follows the replica to its new hosts (it re-reads the state) and sends it requests again.
    const t1 = Date.now();
    while (!/replica 1 \(spotty-r1\) answers again/.test(proxy.stderr()) && Date.now() - t1 < 30_000) {
      await new Promise((res) => setTimeout(res, 50));
    }
    expect(proxy.stderr()).toMatch(/replica 1 \(spotty-r1\) answers again/);
    await new Promise((res) => setTimeout(res, 2_000));
    stop = true;
    await client;
    await new Promise((res) => setTimeout(res, 500));
    expect((await proxy.stop()).code).toBe(0);

    // The survivor was never touched: same hosts, same server process.
    const after0 = e.replica("spotty", 0);
    expect(after0.hosts.map((h) => [h.internalIp, h.pgid])).toEqual(survivor.hosts.map((h) => [h.internalIp, h.pgid]));
    // The relaunched replica serves again on new hosts.
    const back = e.replica("spotty", 1);
    expect(back.phase).toBe("serving");
    const backInfo = await replicaInfo("spotty", 1);
    expect(backInfo).toMatchObject({ nnodes: 1, tp_size: 4 });
    expect(Number(backInfo.requests_served)).toBeGreaterThan(0);

    const okCount = sent.filter((s) => s.status === 200).length;
    expect(sent.length).toBeGreaterThan(20);
    expect(okCount / sent.length).toBeGreaterThanOrEqual(0.95);
    expect(sent.filter((s) => s.at >= noticedAt && s.status !== 200)).toEqual([]);
    expect(preemptedAt).toBeLessThanOrEqual(noticedAt);

    // status carries the replica in its history.
    const st = ok(await e.cli(["status", "spotty", "--json"]));
    const dep = (st.json as { result: { deployments: { summary: string; history: { event: string; replica?: number }[] }[] } }).result
      .deployments[0];
    expect(dep?.summary).toBe("2/2 replicas serving");
    expect(dep?.history).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ event: "preempted", replica: 1 }),
        expect.objectContaining({ event: "relaunched", replica: 1 }),
      ]),
    );
    expect(dep?.history.some((h) => h.replica === 0 && (h.event === "preempted" || h.event === "relaunched"))).toBe(false);
    ok(await e.cli(["down", "spotty", "-y"]));
  });
});
