// `tpu-deploy up` end to end on the simulated cloud: real sshd hosts in their own network namespaces, the
// SkyPilot-faithful fake sky, the Cloud TPU API emulator and the strict sglang-jax double (which refuses to
// serve unless every rank joined with the right rank, tp-size and dist-init address).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type E2E, serverInfo, startE2E } from "./helpers.js";

interface ReplicaJson {
  replica: number;
  cluster: string;
  zone: string;
  phase: string;
  distInitAddr: string;
  hosts: { rank: number; workerId: number; internalIp: string; externalIp: string; sshHost: string }[];
}
interface UpJson extends Omit<ReplicaJson, "replica" | "cluster" | "phase"> {
  name: string;
  layout: string;
  accelerator: string;
  serving: number;
  replicas: ReplicaJson[];
}

let e2e: E2E;

beforeAll(async () => {
  e2e = await startE2E();
});
afterAll(async () => {
  await e2e?.stop();
});

async function simHosts(cluster: string) {
  const s = await e2e.sim.state();
  return Object.values(s.hosts).filter((h) => h.cluster === cluster && h.alive);
}

async function up(args: string[], env: NodeJS.ProcessEnv = {}): Promise<UpJson> {
  const r = await e2e.cli(["up", ...args, "--json"], { env });
  if (r.code !== 0) throw new Error(`up failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  const doc = r.json as { version: number; command: string; ok: boolean; result: UpJson };
  expect(doc).toMatchObject({ version: 1, command: "up", ok: true });
  return doc.result;
}

/** What the double saw, asked on rank 0's own host (the internal address is unreachable from here). */
async function doubleView(result: Pick<ReplicaJson, "hosts">, apiKey?: string, cluster?: string) {
  const rank0 = result.hosts.find((h) => h.rank === 0);
  if (!rank0) throw new Error("no rank 0");
  const s = await e2e.sim.state();
  const host = Object.values(s.hosts).find((h) => h.internalIp === rank0.internalIp && h.alive && (!cluster || h.cluster === cluster));
  if (!host) throw new Error("rank 0 host not in the sim");
  return serverInfo(e2e.sim, host.id, rank0.internalIp, 30000, apiKey);
}

/** In every replica: each rank = its host's TPU worker number, one slice per replica, and the double agrees. */
async function expectRanksFollowWorkers(result: UpJson, hostsPerReplica: number, tpSize: number) {
  expect(result.replicas.length).toBeGreaterThan(0);
  for (const r of result.replicas) {
    expect(r.cluster).toBe(r.replica === 0 ? result.name : `${result.name}-r${r.replica}`);
    expect(r.hosts).toHaveLength(hostsPerReplica);
    const hosts = await simHosts(r.cluster);
    const state = await e2e.sim.state();
    const headHost = hosts.find((h) => h.id === state.clusters[r.cluster]?.headHostId);
    expect(headHost?.workerId).toBe(0);
    const rank0 = r.hosts.find((h) => h.rank === 0);
    expect(rank0?.internalIp).toBe(headHost?.internalIp);
    for (const h of r.hosts) {
      const sim = hosts.find((x) => x.internalIp === h.internalIp);
      expect(sim, `host ${h.internalIp} of ${r.cluster}`).toBeDefined();
      expect(h.workerId).toBe(sim?.workerId);
      expect(h.rank).toBe(sim?.workerId);
      expect(h.externalIp).toBe(sim?.externalIp);
    }
    const info = await doubleView(r, undefined, r.cluster);
    expect(info.nnodes).toBe(hostsPerReplica);
    expect(info.tp_size).toBe(tpSize);
    // sglang-jax ignores --dist-init-addr on one host, and tpu-deploy does not pass it there.
    expect(info.dist_init_addr).toBe(hostsPerReplica > 1 ? `${headHost?.internalIp}:10011` : null);
    if (hostsPerReplica > 1) expect(r.distInitAddr).toBe(`${headHost?.internalIp}:10011`);
    expect([...(info.ranks_seen as number[])].sort((a, b) => a - b)).toEqual(r.hosts.map((h) => h.rank).sort((a, b) => a - b));
  }
}

async function expectNothingLeft(name: string) {
  const s = await e2e.sim.state();
  const ours = (c: string) => c === name || new RegExp(`^${name}-r\\d+$`).test(c);
  expect(Object.values(s.hosts).filter((h) => h.alive && ours(h.cluster))).toEqual([]);
  expect(Object.keys(s.clusters).filter(ours)).toEqual([]);
  expect(Object.values(s.nodes).filter((n) => n.labels["tpu-deploy"] === name)).toEqual([]);
  expect(e2e.state(name)).toBeUndefined();
}

describe("up on the simulated cloud", () => {
  it("v6e-8 (one host): up, status, logs, proxy with a real request, restart, down", async () => {
    let proxyRun: Promise<{ code: number; stdout: string }> | undefined;
    const r = await up(["-n", "solo", "--nodes", "1"]);
    expect(r.accelerator).toBe("v6e-8");
    expect(r.hosts).toHaveLength(1);
    await expectRanksFollowWorkers(r, 1, 8);

    const st = await e2e.cli(["status", "solo", "--json"]);
    expect(st.code).toBe(0);
    const dep = (st.json as { result: { deployments: { name: string; health: string; hosts: { process: string }[] }[] } }).result
      .deployments[0];
    expect(dep).toMatchObject({ name: "solo", health: "serving" });
    expect(dep?.hosts.map((h) => h.process)).toEqual(["running"]);

    const logs = await e2e.cli(["logs", "solo", "--tail", "50"]);
    expect(logs.code).toBe(0);
    // One replica: the prefix is the rank alone.
    expect(logs.stdout).toMatch(/^\[rank 0\] .*The server is fired up and ready to roll!/m);

    const ac = new AbortController();
    let url: string | undefined;
    const gotUrl = new Promise<void>((resolve) => {
      const proxyDone = e2e.cli(["proxy", "solo", "--local-port", "0"], {
        signal: ac.signal,
        onStdout: (text) => {
          const m = /^(http:\/\/127\.0\.0\.1:\d+)\n/.exec(text);
          if (m && !url) {
            url = m[1];
            resolve();
          }
        },
      });
      proxyRun = proxyDone;
    });
    await gotUrl;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "Qwen/Qwen3-8B", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { choices: unknown[]; model: string };
    expect(body.choices.length).toBeGreaterThan(0);
    ac.abort();
    const pr = await (proxyRun as Promise<{ code: number; stdout: string }>);
    expect(pr.code).toBe(0);
    expect(pr.stdout.trim()).toBe(url);

    // up again with the same spec: nothing to do; with another model: only the servers restart;
    // with other resources: refused without --recreate.
    const pgid = () => e2e.replica("solo").hosts[0]?.pgid;
    const first = pgid();
    await up(["-n", "solo", "--nodes", "1"]);
    expect(pgid()).toBe(first);
    const other = await up(["-n", "solo", "--nodes", "1", "--model", "Qwen/Qwen3-4B"]);
    expect(pgid()).not.toBe(first);
    expect((await doubleView(other)).model_path).toBe("Qwen/Qwen3-4B");
    const bigger = await e2e.cli(["up", "-n", "solo", "--nodes", "4"]);
    expect(bigger.code).toBe(2);
    expect(bigger.stderr).toMatch(/--recreate/);

    const before = e2e.replica("solo");
    const rs = await e2e.cli(["restart", "solo", "--json"]);
    expect(rs.code, rs.stderr).toBe(0);
    const after = e2e.replica("solo");
    expect(after.hosts[0]?.pgid).not.toBe(before.hosts[0]?.pgid);
    const launches = (await e2e.sim.skyCalls()).filter((c) => c.argv[0] === "launch" && c.argv.includes("solo"));
    expect(launches).toHaveLength(1); // restart did not reprovision

    // --recreate tears the old cluster down first: it asks, so without a terminal it needs -y.
    const noYes = await e2e.cli(["up", "-n", "solo", "--nodes", "4", "--recreate"]);
    expect(noYes.code).toBe(2);
    expect(noYes.stderr).toMatch(/-y/);
    const recreated = await up(["-n", "solo", "--nodes", "4", "--recreate", "-y"]);
    expect(recreated.accelerator).toBe("v6e-16");
    await expectRanksFollowWorkers(recreated, 4, 16);

    const down = await e2e.cli(["down", "solo", "-y", "--json"]);
    expect(down.code, down.stderr).toBe(0);
    expect((down.json as { result: unknown }).result).toMatchObject({
      name: "solo",
      verified: true,
      existed: true,
      checked: ["gone from sky status", "no TPU node left in the Cloud TPU API (us-east5-a)"],
    });
    await expectNothingLeft("solo");
    // down of something already gone succeeds and says so
    const again = await e2e.cli(["down", "solo", "-y"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/already gone/);
  });

  it("--accelerator v6e-4 --nodes 3: three replicas, each its own cluster serving alone (--nnodes 1, --tp-size 4)", async () => {
    const r = await up(["-n", "three", "--accelerator", "v6e-4", "--nodes", "3"]);
    expect(r.layout).toMatch(/^3 replicas, each one v6e-4/);
    expect(r.replicas.map((x) => [x.replica, x.cluster, x.phase])).toEqual([
      [0, "three", "serving"],
      [1, "three-r1", "serving"],
      [2, "three-r2", "serving"],
    ]);
    await expectRanksFollowWorkers(r, 1, 4);
    expect((await e2e.cli(["down", "three", "-y"])).code).toBe(0);
    await expectNothingLeft("three");
  });

  it("v6e-32: 8 hosts whose TPU worker order differs from SkyPilot's host order", async () => {
    const r = await up(["-n", "pod32", "--accelerator", "v6e-32"]);
    expect(r.hosts).toHaveLength(8);
    await expectRanksFollowWorkers(r, 8, 32);
    // SkyPilot names hosts head, worker1.. by external IP sorted as a string: not the worker order.
    const aliasIndex = (h: UpJson["hosts"][number]) => (h.sshHost === "pod32" ? 0 : Number(h.sshHost.replace("pod32-worker", "")));
    expect(r.hosts.some((h) => aliasIndex(h) !== h.rank)).toBe(true);
    expect((await e2e.cli(["down", "pod32", "-y"])).code).toBe(0);
    await expectNothingLeft("pod32");
  });

  it("v6e-64: 16 hosts", async () => {
    const r = await up(["-n", "pod64", "--nodes", "16"]);
    expect(r.accelerator).toBe("v6e-64");
    expect(r.hosts).toHaveLength(16);
    await expectRanksFollowWorkers(r, 16, 64);
    expect((await e2e.cli(["down", "pod64", "-y"])).code).toBe(0);
    await expectNothingLeft("pod64");
  });

  it("v7 2-VM slice: worker numbers from each host's metadata server (no TPU API)", async () => {
    const r = await up(["-n", "iron", "--tpu", "v7", "--nodes", "2"]);
    expect(r.accelerator).toBe("tpu7x-16");
    const info = await doubleView(r);
    expect(info.tp_size).toBe(16);
    await expectRanksFollowWorkers(r, 2, 16);
    const tpuLog = join(e2e.sim.root, "calls", "tpu.jsonl");
    const tpuCalls = existsSync(tpuLog) ? readFileSync(tpuLog, "utf8") : "";
    expect(tpuCalls).not.toMatch(/iron/); // the API does not serve TPU7x: never asked about it
    const down = await e2e.cli(["down", "iron", "-y"]);
    expect(down.code, down.stderr).toBe(0);
    // down claims only what it checked: sky status, not a Cloud TPU API it never asked.
    expect(down.stdout).toMatch(/iron is down \(verified: gone from sky status; not checked: the Cloud TPU API does not serve TPU7x/);
    expect(down.stdout).not.toMatch(/no TPU node left/);
    await expectNothingLeft("iron");
  });

  it("hostile input stays inert, and secrets never leak", async () => {
    const model = `Org/Mo"del'; echo pwned $(id) \`id\`\nsecond line`;
    const served = `name with 'quotes' "and" $(touch /tmp/pwned) ; rm -rf ~\n;`;
    const weird = `a"b'c $(id); d\ne \\ f`;
    const hf = "hf_SECRETvalue_1234567890";
    const apiKey = "sk-API-KEY-abcdef-0987654321";
    const r = await up(
      [
        "-n",
        "hostile",
        "--nodes",
        "4",
        "--model",
        model,
        `--server-arg=--served-model-name=${served}`,
        "--env",
        `WEIRD=${weird}`,
        "--secret",
        "HF_TOKEN",
        "--api-key-secret",
        "SGLANG_API_KEY",
      ],
      { HF_TOKEN: hf, SGLANG_API_KEY: apiKey },
    );
    const info = await doubleView(r, apiKey);
    expect(info.model_path).toBe(model);
    expect(info.served_model_name).toBe(served);
    // The key reached the server, which echoes it in /get_server_info as the real one does (§B1).
    expect(info.api_key).toBe(apiKey);

    const hosts = await simHosts("hostile");
    const rank0 = hosts.find((h) => h.internalIp === r.hosts.find((x) => x.rank === 0)?.internalIp);
    if (!rank0) throw new Error("no rank 0 host");
    // The env value arrived byte for byte in the server's environment.
    const pid = e2e.replica("hostile").hosts.find((h) => h.rank === 0)?.pgid;
    const environ = await e2e.sim.execOnHost(rank0.id, `cat /proc/${pid}/environ | base64 -w0`);
    const vars = Buffer.from(environ.stdout.trim(), "base64").toString("utf8").split("\0");
    expect(vars).toContain(`WEIRD=${weird}`);
    expect(vars).toContain(`HF_TOKEN=${hf}`);
    // The API key reached the server on a file descriptor: not in the environment it started with (#10.9).
    expect(vars.filter((v) => v.includes(apiKey))).toEqual([]);
    expect((await e2e.sim.execOnHost(rank0.id, "ls /tmp/pwned 2>&1 || true")).stdout).toMatch(/No such file/);

    // The API key is enforced, and it is sent by tpu-deploy's own health checks (up succeeded).
    const noKey = await e2e.sim.execOnHost(
      rank0.id,
      `python3 -c "import urllib.request as u
try: u.urlopen('http://${rank0.internalIp}:30000/v1/models', timeout=5)
except Exception as e: print(e)"`,
    );
    expect(noKey.stdout).toMatch(/401/);
    // ... and `tpu-deploy proxy` sends it for the client.
    const ac = new AbortController();
    let proxyUrl: string | undefined;
    let proxyRun: Promise<{ code: number }> | undefined;
    await new Promise<void>((resolve) => {
      proxyRun = e2e.cli(["proxy", "hostile"], {
        signal: ac.signal,
        env: { SGLANG_API_KEY: apiKey },
        onStdout: (text) => {
          const m = /^(http:\/\/127\.0\.0\.1:\d+)\n/.exec(text);
          if (m && !proxyUrl) {
            proxyUrl = m[1];
            resolve();
          }
        },
      });
    });
    const models = await fetch(`${proxyUrl}/v1/models`);
    expect(models.status).toBe(200);
    expect(((await models.json()) as { data: { id: string }[] }).data[0]?.id).toBe(served);
    ac.abort();
    expect((await (proxyRun as Promise<{ code: number }>)).code).toBe(0);

    // No secret value in any argv on any host, while the servers run.
    for (const h of hosts) {
      const cmdlines = await e2e.sim.execOnHost(h.id, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '");
      expect(cmdlines.stdout).toContain("sgl_jax");
      expect(cmdlines.stdout).not.toContain(hf);
      expect(cmdlines.stdout).not.toContain(apiKey);
      const logs = await e2e.sim.execOnHost(h.id, "cat /home/gcpuser/.tpu-deploy/hostile/server.log");
      expect(logs.stdout).not.toContain(hf);
      expect(logs.stdout).not.toContain(apiKey);
    }
    // sglang-jax logs its ServerArgs with the key in clear; the host's log got [REDACTED] instead, and so
    // does what `tpu-deploy logs` shows.
    const shown = await e2e.cli(["logs", "hostile", "--tail", "200"], { env: { HF_TOKEN: hf, SGLANG_API_KEY: apiKey } });
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/server_args=ServerArgs\(.*api_key='\[REDACTED\]'/);
    expect(shown.stdout).not.toContain(apiKey);
    // ... nor in the local state, the sky log, the task file, the sky calls or our output.
    const { execSync } = await import("node:child_process");
    const grep = (v: string) =>
      execSync(`grep -rl -- ${JSON.stringify(v)} ${e2e.stateHome} ${e2e.sim.root}/calls || true`, { encoding: "utf8" }).trim();
    expect(grep(hf)).toBe("");
    expect(grep(apiKey)).toBe("");
    const st2 = await e2e.cli(["status", "hostile", "--json"], { env: { HF_TOKEN: hf, SGLANG_API_KEY: apiKey } });
    expect(st2.stdout).not.toContain(hf);
    expect(st2.stdout).not.toContain(apiKey);
    // The secret file on the host is 0600 and only gcpuser's.
    const mode = await e2e.sim.execOnHost(rank0.id, "stat -c '%a %U' /home/gcpuser/.tpu-deploy/hostile/secrets.env");
    expect(mode.stdout.trim()).toBe("600 gcpuser");
    // ... and so is the server's log.
    const logMode = await e2e.sim.execOnHost(rank0.id, "stat -c '%a %U' /home/gcpuser/.tpu-deploy/hostile/server.log");
    expect(logMode.stdout.trim()).toBe("600 gcpuser");

    expect((await e2e.cli(["down", "hostile", "-y"])).code).toBe(0);
    await expectNothingLeft("hostile");
  });
});
