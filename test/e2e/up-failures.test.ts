// `tpu-deploy up` when things go wrong, end to end on the simulated cloud: zone failover on capacity and
// quota, a failed setup, a rank that crashes, a wedged server, a blocked rendezvous port, Ctrl-C during
// the launch, a second run on a busy deployment, a crashed run and the rerun that recovers, and a secret
// that cannot be resolved. Each test checks what the user is left with: exit code, error code, the
// message and hint, and what is (not) left running or billed in the cloud.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { SimHost } from "../sim/state.js";
import { repoRoot } from "../sim/sim.js";
import { type CliResult, type E2E, serverInfo, startE2E } from "./helpers.js";

let e: E2E;

interface JsonFailure {
  version: number;
  command: string;
  ok: false;
  error: { code: string; message: string; hint?: string };
}

/** `up` of `nodes` v6e hosts (1: v6e-8; 4: v6e-16) named `name`, trying the given zones in order. */
function upArgs(name: string, zones: string[], extra: string[] = [], nodes = 1): string[] {
  return ["up", "--name", name, "--tpu", "v6e", "--nodes", String(nodes), ...zones.flatMap((z) => ["--zone", z]), ...extra];
}

function ok(r: CliResult): CliResult {
  if (r.code !== 0) throw new Error(`exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr.slice(-4000)}`);
  return r;
}

/** The --json failure document: exactly one JSON document on stdout, in the documented shape. */
function jsonFailure(r: CliResult): JsonFailure {
  expect(r.json, `stdout is one JSON document:\n${r.stdout}`).toBeDefined();
  const doc = r.json as JsonFailure;
  expect(Object.keys(doc).sort()).toEqual(["command", "error", "ok", "version"]);
  expect(doc).toMatchObject({ version: 1, command: "up", ok: false });
  expect(Object.keys(doc.error).every((k) => ["code", "message", "hint"].includes(k))).toBe(true);
  expect(typeof doc.error.message).toBe("string");
  return doc;
}

async function callCount(): Promise<number> {
  return (await e.sim.skyCalls()).length;
}

async function callsSince(mark: number): Promise<string[][]> {
  return (await e.sim.skyCalls()).slice(mark).map((c) => c.argv);
}

/** The zone of each `sky launch -c NAME` call, in order. */
function launchZones(calls: string[][], name: string): string[] {
  return calls
    .filter((a) => a[0] === "launch" && a[a.indexOf("-c") + 1] === name)
    .map((a) => {
      const infra = a[a.indexOf("--infra") + 1] ?? "";
      return infra.split("/")[2] ?? infra;
    });
}

/** Everything the simulated cloud still has for cluster `name`: its record, live hosts, TPU nodes. */
async function leftovers(name: string): Promise<{ cluster: boolean; hosts: SimHost[]; nodes: string[] }> {
  const s = await e.sim.state();
  return {
    cluster: s.clusters[name] !== undefined,
    hosts: Object.values(s.hosts).filter((h) => h.cluster === name && h.alive),
    nodes: Object.values(s.nodes)
      .filter((n) => n.labels["tpu-deploy"] === name || (n.labels["skypilot-cluster-name"] ?? "").startsWith(`${name}-`))
      .map((n) => `${n.name} (${n.state})`),
  };
}

async function liveHosts(name: string): Promise<SimHost[]> {
  return (await leftovers(name)).hosts;
}

// The hosts share the machine's PID namespace (other sims' servers show up in a bare pgrep): keep the
// processes in this host's network namespace.
const OUR_SERVERS = `me=$(readlink /proc/self/ns/net); for p in $(pgrep -u gcpuser -f sgl_jax); do [ "$(readlink /proc/$p/ns/net 2>/dev/null)" = "$me" ] && echo "$p $(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)"; done; true`;

/** Server processes of ours (the sglang-jax double runs as gcpuser) on every live host of the cluster. */
async function serverProcesses(name: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const h of await liveHosts(name)) {
    const r = await e.sim.execOnHost(h.id, OUR_SERVERS);
    const pids = r.stdout.trim();
    if (pids) out[h.id] = pids;
  }
  return out;
}

/** Replica 0 (these deployments have one) with the deployment's config. */
function deployment(name: string) {
  return e.replica(name);
}

/** `sky status -o json` as the user would run it, through the fake sky on PATH. */
function skyStatusNames(): string[] {
  const out = execFileSync("sky", ["status", "-o", "json"], { env: e.env, encoding: "utf8" });
  const lines = out.split("\n");
  const start = lines.findIndex((l) => l.startsWith("["));
  return (JSON.parse(lines.slice(start).join("\n")) as { name: string }[]).map((r) => r.name);
}

/** Launch requests the fake API server received for a cluster. */
function launchRequests(name: string): { requestId: string; status: string }[] {
  const dir = join(e.sim.root, "requests");
  return readdirSync(dir)
    .filter((f) => /^[0-9a-f-]+\.json$/.test(f))
    .map(
      (f) =>
        JSON.parse(readFileSync(join(dir, f), "utf8")) as { requestId: string; name: string; clusterName: string | null; status: string },
    )
    .filter((r) => r.name === "sky.launch" && r.clusterName === name);
}

/** Waits until `up` has started its servers (the state records their process groups): readiness is next. */
async function serversStarted(p: { waitFor: (re: RegExp, ms: number) => Promise<unknown> }, name: string): Promise<void> {
  await p.waitFor(/starting ranks/, 180_000);
  const until = Date.now() + 60_000;
  while (!deployment(name).hosts.some((h) => h.pgid)) {
    if (Date.now() > until) throw new Error(`${name}: no server started within 60 s of "starting ranks"`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

beforeAll(async () => {
  e = await startE2E();
});

afterAll(async () => {
  await e?.stop();
});

afterEach(async () => {
  await e.sim.setFaults({});
});

describe("tpu-deploy up: failure paths", () => {
  it("no capacity in the first zone: removes what the attempt left, launches in the second and serves there", async () => {
    await e.sim.setFaults({ sky: { capacityZones: ["us-east5-a"] } });
    const m = await callCount();
    const r = ok(await e.cli(upArgs("cap", ["us-east5-a", "us-east5-b"], ["--json"])));
    const doc = r.json as { ok: boolean; result: { zone: string; hosts: unknown[] } };
    expect(doc.ok).toBe(true);
    expect(doc.result.zone).toBe("us-east5-b");

    const calls = await callsSince(m);
    expect(launchZones(calls, "cap")).toEqual(["us-east5-a", "us-east5-b"]);
    const first = calls.findIndex((a) => a[0] === "launch");
    const second = calls.findIndex((a, i) => i > first && a[0] === "launch");
    const between = calls.slice(first + 1, second);
    // Before moving on, whatever the attempt left is removed: SkyPilot drops a cluster whose provisioning
    // failed, so tpu-deploy finds no record (`sky status`) and has nothing to `sky down`; a `sky down` here
    // could only be of this cluster.
    expect(between.filter((a) => a[0] === "status" && a.at(-1) === "cap").length, JSON.stringify(between)).toBeGreaterThanOrEqual(1);
    expect(
      between.filter((a) => a[0] !== "status" && !(a[0] === "down" && a.includes("-y") && a.at(-1) === "cap")),
      JSON.stringify(between),
    ).toEqual([]);

    // The cloud has the cluster in us-east5-b only.
    const s = await e.sim.state();
    expect(s.clusters.cap?.zone).toBe("us-east5-b");
    expect(Object.values(s.hosts).filter((h) => h.cluster === "cap" && h.alive && h.zone !== "us-east5-b")).toEqual([]);
    expect(Object.values(s.nodes).filter((n) => n.zone === "us-east5-a" && n.labels["tpu-deploy"] === "cap")).toEqual([]);
    expect(deployment("cap")).toMatchObject({ phase: "serving", zone: "us-east5-b" });
  });

  it("quota exhausted in a region: stops with code quota when every zone is in it, leaving nothing launched", async () => {
    await e.sim.setFaults({ sky: { quota: { zone: "us-east5-a", scope: "region" } } });
    const m = await callCount();
    const r = await e.cli(upArgs("quota1", ["us-east5-a", "us-east5-b"], ["--json"]));
    expect(r.code, r.stdout).toBe(1);
    const doc = jsonFailure(r);
    expect(doc.error.code).toBe("quota");
    expect(doc.error.message).toMatch(/us-east5-a: quota/);
    expect(doc.error.message).toMatch(/us-east5-b: skipped/);
    expect(doc.error.hint).toMatch(/quota/);
    // us-east5-b is in the blocked region: never tried.
    expect(launchZones(await callsSince(m), "quota1")).toEqual(["us-east5-a"]);
    expect(await leftovers("quota1")).toEqual({ cluster: false, hosts: [], nodes: [] });
    expect(e.state("quota1")).toBeUndefined();
  });

  it("quota exhausted in a region: skips the region's other zones and succeeds in another region", async () => {
    await e.sim.setFaults({ sky: { quota: { zone: "us-east5-a", scope: "region" } } });
    const m = await callCount();
    const r = ok(await e.cli(upArgs("quota2", ["us-east5-a", "us-east5-b", "us-central1-b"], ["--json"])));
    expect((r.json as { result: { zone: string } }).result.zone).toBe("us-central1-b");
    expect(launchZones(await callsSince(m), "quota2")).toEqual(["us-east5-a", "us-central1-b"]);
    const s = await e.sim.state();
    expect(
      Object.values(s.hosts)
        .filter((h) => h.cluster === "quota2" && h.alive)
        .map((h) => h.zone),
    ).toEqual(["us-central1-b"]);
    expect(deployment("quota2").phase).toBe("serving");
  });

  it("setup fails on the hosts (sky exit 100): exit 1, code setup_failed, a hint to read `sky logs`", async () => {
    await e.sim.setFaults({ sky: { setupFail: true } });
    const m = await callCount();
    const r = await e.cli(upArgs("setupfail", ["us-east5-b"], ["--json"]));
    expect(r.code, r.stdout).toBe(1);
    const doc = jsonFailure(r);
    expect(doc.error.code).toBe("setup_failed");
    expect(doc.error.message).toMatch(/setup failed.*exit 100/s);
    expect(doc.error.hint).toMatch(/sky logs setupfail/);
    const calls = await callsSince(m);
    expect(launchZones(calls, "setupfail")).toEqual(["us-east5-b"]);
    // Not a capacity problem: no other zone, and no server was started.
    expect(calls.filter((a) => a[0] === "launch")).toHaveLength(1);
    expect(await serverProcesses("setupfail")).toEqual({});
    expect(deployment("setupfail").lastError?.code).toBe("setup_failed");
  });

  it("a template that installs sglang-jax relative to setup's working directory fails at the start, naming the path and sglang.dir", async () => {
    // The setup of the templates before the fix: `git clone ... sglang-jax` with no absolute path. SkyPilot
    // runs setup in ~/sky_workdir, so the venv lands in ~/sky_workdir/sglang-jax.
    const builtIn = readFileSync(join(repoRoot(), "templates", "v6e.sky.yaml"), "utf8");
    const relative = `${builtIn.slice(0, builtIn.indexOf("setup: |"))}setup: |
  set -euo pipefail
  export PATH="$HOME/.local/bin:$PATH"
  command -v uv >/dev/null 2>&1 || curl -LsSf https://astral.sh/uv/install.sh | sh
  [ -d sglang-jax/.git ] || git clone "$TPD_SGLANG_REPO" sglang-jax
  cd sglang-jax
  git checkout --quiet "$TPD_SGLANG_REF"
  [ -d .venv ] || uv venv --python "$TPD_PYTHON" .venv
  source .venv/bin/activate
  uv pip install -e "python[all]"
  touch ".venv/.tpu-deploy-installed-$TPD_SGLANG_REF"
run: |
  echo ready
`;
    const template = join(e.sim.home, "relative.sky.yaml");
    writeFileSync(template, relative);
    const r = await e.cli(upArgs("reltpl", ["us-east5-b"], ["--template", template, "--json"]));
    expect(r.code, r.stdout).toBe(1);
    const doc = jsonFailure(r);
    expect(doc.error.code).toBe("setup_failed");
    expect(doc.error.message).toContain("/home/gcpuser/sglang-jax/.venv/bin/python");
    expect(doc.error.message).toContain("sglang.dir");
    expect(doc.error.message).toMatch(/rank 0 \(reltpl\)/);
    expect(doc.error.hint).toMatch(/sky_workdir/);
    expect(doc.error.hint).toMatch(/--sglang-dir/);
    // Setup really ran, in ~/sky_workdir: the venv is there, not in $HOME.
    const head = (await liveHosts("reltpl"))[0];
    if (!head) throw new Error("no host");
    const ls = await e.sim.execOnHost(
      head.id,
      "ls -d /home/gcpuser/sky_workdir/sglang-jax/.venv/bin/python /home/gcpuser/sglang-jax 2>&1; true",
    );
    expect(ls.stdout).toContain("/home/gcpuser/sky_workdir/sglang-jax/.venv/bin/python");
    expect(ls.stdout).toMatch(/cannot access '\/home\/gcpuser\/sglang-jax'/);
    expect(await serverProcesses("reltpl")).toEqual({});
    ok(await e.cli(["down", "reltpl", "-y"]));
  });

  it("a rank crashes during start: fails at once with that rank's log lines, and no server is left anywhere", async () => {
    await e.sim.setFaults({ server: { crash: { rank: 1, when: "after-rendezvous" } } });
    const readyTimeoutMs = 180_000;
    const p = e.spawnCli(upArgs("crash", ["us-east5-b"], ["--ready-timeout", "3m"], 4));
    await p.waitFor(/starting ranks/, 120_000);
    const t0 = Date.now();
    const code = await p.exit;
    const waited = Date.now() - t0;
    expect(code, p.stderr()).toBe(1);
    // Far less than the readiness timeout: a dead rank is noticed, not waited out.
    expect(waited).toBeLessThan(readyTimeoutMs / 6);
    const err = p.stderr();
    // Rank 1 failed and the others stopped with it: whichever was noticed first, rank 1 is named and its
    // own last log lines (the crash) are shown under it.
    const head =
      /tpu-deploy up: (?:rank 1 \(crash[-\w]*\) exited during start; its last log lines:|ranks ([\d, ]+) exited during start .*their last log lines:)\n/.exec(
        err,
      );
    expect(head, err).not.toBeNull();
    if (head?.[1]) expect(head[1].split(", ")).toContain("1");
    const rank1Lines = head?.[1] ? (/rank 1 \(crash[-\w]*\):\n((?: {8}.*\n)+)/.exec(err)?.[1] ?? "") : err;
    expect(rank1Lines, err).toMatch(/rank 1 crashed after rendezvous \(injected/);
    expect(rank1Lines).toMatch(/RuntimeError: injected crash/);
    expect(err).toMatch(/hint: see everything with `tpu-deploy logs crash --rank (1|all)`/);
    expect(deployment("crash").lastError?.code).toBe("server_crashed");
    const hosts = await liveHosts("crash");
    expect(hosts).toHaveLength(4);
    expect(await serverProcesses("crash")).toEqual({});
  });

  it("a scheduler killed during start while its main process serves /health: fails at once, naming it", async () => {
    // Real sglang-jax: a SIGKILLed scheduler sends nothing; the main process logs the SIGCHLD and keeps
    // answering /health, so only the process tree shows the crash (engine.py sigchld_handler).
    await e.sim.setFaults({ server: { crash: { rank: 0, when: "after-ready", how: "sigkill" }, loadDelayMs: 5000 } });
    // (The load delay stands for model loading, minutes on a real host: the scheduler is seen alive first.)
    const p = e.spawnCli(upArgs("schedkill", ["us-east5-b"], ["--ready-timeout", "3m"]));
    await p.waitFor(/starting ranks/, 120_000);
    const t0 = Date.now();
    const code = await p.exit;
    expect(code, p.stderr()).toBe(1);
    expect(Date.now() - t0).toBeLessThan(30_000);
    const err = p.stderr();
    expect(err).toMatch(
      /rank 0 \(schedkill[-\w]*\) lost its scheduler process during start \(the main process stays up, serving nothing\)/,
    );
    expect(err).toMatch(/Child process unexpectedly failed with exitcode=/);
    expect(deployment("schedkill").lastError?.code).toBe("server_crashed");
    // The main process that stayed up is stopped too.
    expect(await serverProcesses("schedkill")).toEqual({});
    ok(await e.cli(["down", "schedkill", "-y"]));
  });

  it("a wedged server (/health 200, /health_generate 503): readiness_timeout after about --ready-timeout", async () => {
    await e.sim.setFaults({ server: { wedged: true } });
    const p = e.spawnCli(upArgs("wedged", ["us-east5-b"], ["--ready-timeout", "20s"]));
    await p.waitFor(/starting ranks/, 120_000);
    const t0 = Date.now();
    const code = await p.exit;
    const waited = Date.now() - t0;
    expect(code, p.stderr()).toBe(1);
    expect(waited).toBeGreaterThanOrEqual(19_000);
    expect(waited).toBeLessThan(45_000);
    const err = p.stderr();
    expect(err).toMatch(/warming up \(\/health answers\)/);
    expect(err).toMatch(/did not serve within 20s/);
    expect(err).toMatch(/hint: .*wedged/);
    expect(deployment("wedged").lastError?.code).toBe("readiness_timeout");
    // The servers this run started are stopped.
    expect(await serverProcesses("wedged")).toEqual({});
  });

  it("a rendezvous port blocked on rank 0: the pre-check names the port and the rank, and nothing is started", async () => {
    ok(await e.cli(upArgs("ports", ["us-east5-b"], ["-q"], 4)));
    const s = await e.sim.state();
    const cluster = s.clusters.ports;
    const rank0Host = cluster ? s.hosts[cluster.headHostId] : undefined;
    expect(rank0Host?.workerId).toBe(0);
    if (!rank0Host) throw new Error("no head host");
    const rank0 = deployment("ports").hosts.find((h) => h.rank === 0);
    expect(rank0?.internalIp).toBe(rank0Host.internalIp);
    expect(Object.keys(await serverProcesses("ports"))).toHaveLength(4);

    await e.sim.blockPort(rank0Host.id, 10011 + 5);
    const r = await e.cli(["restart", "ports", "--json"]);
    expect(r.code, r.stdout).toBe(1);
    const doc = r.json as JsonFailure;
    expect(doc.error.code).toBe("port_blocked");
    expect(doc.error.message).toMatch(new RegExp(`→ rank 0 ${rank0Host.internalIp.replace(/\./g, "\\.")}:10016`));
    expect(doc.error.message).not.toMatch(/:10011:|:10017:/);
    expect(doc.error.hint).toMatch(/10016/);
    expect(await serverProcesses("ports")).toEqual({});
  });

  it("libtpu's port 8471 blocked on one host: every other rank's connection to it is named, nothing is started", async () => {
    ok(await e.cli(upArgs("libtpu", ["us-east5-b"], ["-q"], 4)));
    const rank2 = deployment("libtpu").hosts.find((h) => h.rank === 2);
    const host = Object.values((await e.sim.state()).hosts).find((h) => h.alive && h.internalIp === rank2?.internalIp);
    if (!rank2 || !host) throw new Error("no rank 2");
    await e.sim.blockPort(host.id, 8471);
    const r = await e.cli(["restart", "libtpu", "--json"]);
    expect(r.code, r.stdout).toBe(1);
    const doc = r.json as JsonFailure;
    expect(doc.error.code).toBe("port_blocked");
    for (const from of [0, 1, 3]) expect(doc.error.message).toContain(`rank ${from} (`);
    expect(doc.error.message).toContain(`→ rank 2 ${rank2.internalIp}:8471`);
    expect(doc.error.message).not.toMatch(/→ rank [013] /);
    expect(doc.error.hint).toMatch(/8471 between every pair/);
    expect(await serverProcesses("libtpu")).toEqual({});
  });

  it("the rendezvous port taken on rank 0's loopback: refused before the start, as JAX's bind on [::] would fail", async () => {
    ok(await e.cli(upArgs("loopback", ["us-east5-b"], ["-q"], 4)));
    const rank0 = deployment("loopback").hosts.find((h) => h.rank === 0);
    const host = Object.values((await e.sim.state()).hosts).find((h) => h.alive && h.internalIp === rank0?.internalIp);
    if (!host) throw new Error("no rank 0 host");
    // Another program holds 12000 on loopback only; the deployment moves its rendezvous there (a server-only
    // change: the servers restart on the same hosts, after the port check).
    const squat = await e.sim.execOnHost(
      host.id,
      `nohup python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',12000)); s.listen(1); time.sleep(600)" >/dev/null 2>&1 & echo $!`,
    );
    await new Promise((res) => setTimeout(res, 500));
    const held = await e.sim.execOnHost(
      host.id,
      "python3 -c \"import socket; socket.create_connection(('127.0.0.1',12000), timeout=2).close(); print('held')\"",
    );
    expect(held.stdout).toContain("held");
    try {
      const r = await e.cli(upArgs("loopback", ["us-east5-b"], ["--dist-port", "12000", "--json"], 4));
      expect(r.code, r.stdout).toBe(1);
      const doc = r.json as JsonFailure;
      expect(doc.error.code).toBe("port_blocked");
      expect(doc.error.message).toMatch(/rank 0 cannot listen on its rendezvous port: bind-failed 12000/);
      expect(await serverProcesses("loopback")).toEqual({});
    } finally {
      await e.sim.execOnHost(host.id, `kill ${squat.stdout.trim()}`);
    }
  });

  it("Ctrl-C during the launch: cancels the request, tears the cluster down, exits 130, keeps no state", async () => {
    await e.sim.setFaults({ sky: { hangProvision: true } });
    const m = await callCount();
    const p = e.spawnCli(upArgs("ctrlc", ["us-east5-b"]));
    await p.waitFor(/launching ctrlc/, 60_000);
    // Let sky submit the request and provision the hosts (which then never become ready).
    await p.waitFor(/sky \| .*Waiting for the instances to be ready/, 60_000);
    expect((await leftovers("ctrlc")).cluster).toBe(true);
    p.child.kill("SIGINT");
    const code = await p.exit;
    expect(code, p.stderr()).toBe(130);

    const calls = await callsSince(m);
    const requests = launchRequests("ctrlc");
    expect(requests).toHaveLength(1);
    const id = requests[0]?.requestId ?? "";
    const cancels = calls.filter((a) => a[0] === "api" && a[1] === "cancel");
    expect(cancels).toHaveLength(1);
    const cancelled = cancels[0]?.at(-1) ?? "";
    expect(cancels[0]).not.toContain("--all");
    expect(cancelled.length).toBeGreaterThanOrEqual(8);
    expect(id.startsWith(cancelled)).toBe(true);
    expect(calls.some((a) => a[0] === "down" && a.includes("ctrlc"))).toBe(true);
    expect(requests[0]?.status).toBe("CANCELLED");

    expect(await leftovers("ctrlc")).toEqual({ cluster: false, hosts: [], nodes: [] });
    expect(skyStatusNames()).not.toContain("ctrlc");
    expect(existsSync(join(e.stateHome, "deployments", "ctrlc", "state.json"))).toBe(false);
  });

  it("Ctrl-C while waiting for the servers: keeps the slice, stops the servers, says how to continue; up again serves on it", async () => {
    // Issue: an interrupt late in up used to tear down the slice it had just launched (possibly after a long
    // wait for capacity). Only a launch in flight is torn down; later the slice stays and the servers stop.
    await e.sim.setFaults({ server: { neverReady: true } });
    const m = await callCount();
    const p = e.spawnCli(upArgs("keepint", ["us-east5-b"], ["--ready-timeout", "10m"]));
    await serversStarted(p, "keepint");
    expect(Object.keys(await serverProcesses("keepint")).length).toBeGreaterThan(0);
    p.child.kill("SIGINT");
    const code = await p.exit;
    expect(code, p.stderr()).toBe(130);
    const err = p.stderr();
    expect(err).toMatch(/keepint: stopping the servers started by this run/);
    expect(err).toMatch(
      /keepint is kept \(v6e-8: 8 chips keep billing while it stays up\): tpu-deploy up keepint continues, tpu-deploy down keepint removes it/,
    );
    expect(err).not.toMatch(/tearing down/);
    expect((await callsSince(m)).some((a) => a[0] === "down")).toBe(false);
    const left = await leftovers("keepint");
    expect(left.cluster).toBe(true);
    expect(left.hosts.length).toBeGreaterThan(0);
    expect(await serverProcesses("keepint")).toEqual({});
    const s = deployment("keepint");
    expect(s.lastError?.code).toBe("interrupted");
    expect(s.hosts.length).toBe(left.hosts.length);

    // Rerun as the message says: the kept cluster is reused (no second launch) and serves.
    await e.sim.setFaults({});
    const m2 = await callCount();
    const r = ok(await e.cli(upArgs("keepint", ["us-east5-b"])));
    expect(r.stderr).toMatch(/cluster keepint is up in us-east5-b: reusing it/);
    expect(launchZones(await callsSince(m2), "keepint")).toEqual([]);
    expect(deployment("keepint").phase).toBe("serving");
    ok(await e.cli(["down", "keepint", "-y"]));
  });

  it("SIGHUP while waiting for the servers with --down-on-interrupt: tears the slice down, exits 130, nothing left", async () => {
    await e.sim.setFaults({ server: { neverReady: true } });
    const p = e.spawnCli(upArgs("downint", ["us-east5-b"], ["--ready-timeout", "10m", "--down-on-interrupt"]));
    await serversStarted(p, "downint");
    p.child.kill("SIGHUP");
    const code = await p.exit;
    expect(code, p.stderr()).toBe(130);
    expect(p.stderr()).toMatch(/tearing down downint \(interrupted while starting, with --down-on-interrupt\)/);
    expect(await leftovers("downint")).toEqual({ cluster: false, hosts: [], nodes: [] });
  });

  it("a second up on the same name while one runs: exit 1 at once, code locked, naming the holder's pid", async () => {
    const m = await callCount();
    const first = e.spawnCli(upArgs("busy", ["us-east5-b"]));
    await first.waitFor(/launching busy/, 60_000);
    const t0 = Date.now();
    const r = await e.cli(upArgs("busy", ["us-east5-b"], ["--json"]));
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(r.code, r.stdout).toBe(1);
    const doc = jsonFailure(r);
    expect(doc.error.code).toBe("locked");
    expect(doc.error.message).toContain(`pid ${first.child.pid}`);
    expect(doc.error.message).toMatch(/tpu-deploy up/);
    expect(doc.error.hint).toBeDefined();
    // The first run is unharmed: it serves, with the one cluster it launched.
    expect(await first.exit, first.stderr()).toBe(0);
    expect(launchZones(await callsSince(m), "busy")).toEqual(["us-east5-b"]);
    expect(deployment("busy").phase).toBe("serving");
  });

  it("a run killed between steps: the rerun takes over the dead lock, reuses the cluster (no second launch) and serves", async () => {
    const m = await callCount();
    const p = e.spawnCli(upArgs("crashrun", ["us-east5-b"]));
    await p.waitFor(/finding hosts/, 120_000);
    const pid = p.child.pid;
    p.child.kill("SIGKILL");
    await p.exit;
    expect(existsSync(join(e.stateHome, "deployments", "crashrun", "lock"))).toBe(true);
    const mid = deployment("crashrun");
    expect(mid.zone).toBe("us-east5-b");

    const r = ok(await e.cli(upArgs("crashrun", ["us-east5-b"])));
    expect(r.stderr).toMatch(new RegExp(`took over the lock of crashrun from pid ${pid} .*no longer running`));
    expect(r.stderr).toMatch(/cluster crashrun is up in us-east5-b: reusing it/);
    expect(launchZones(await callsSince(m), "crashrun")).toEqual(["us-east5-b"]);
    const s = deployment("crashrun");
    expect(s.phase).toBe("serving");
    expect(existsSync(join(e.stateHome, "deployments", "crashrun", "lock"))).toBe(false);
    // It really serves: rank 0 answers with the plan's world.
    const rank0 = s.hosts.find((h) => h.rank === 0);
    const host = (await liveHosts("crashrun")).find((h) => h.externalIp === rank0?.externalIp);
    if (!rank0 || !host) throw new Error("no rank 0 host");
    expect(await serverInfo(e.sim, host.id, rank0.internalIp)).toMatchObject({ nnodes: 1, node_rank: 0 });
  });

  it("an unresolvable secret: exit 2, code secret_missing, and no sky call at all", async () => {
    const m = await callCount();
    const r = await e.cli(upArgs("nosecret", ["us-east5-b"], ["--secret", "HF_TOKEN", "--json"]), { env: { HF_TOKEN: "" } });
    expect(r.code, r.stdout).toBe(2);
    const doc = r.json as JsonFailure;
    expect(doc.error.code).toBe("secret_missing");
    expect(doc.error.message).toMatch(/HF_TOKEN has no value/);
    expect(await callsSince(m)).toEqual([]);
    expect(e.state("nosecret")).toBeUndefined();
    expect(await leftovers("nosecret")).toEqual({ cluster: false, hosts: [], nodes: [] });
  });
});
