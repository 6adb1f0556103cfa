// The simulated TPU VMs must behave like GCP's: real sshd for gcpuser with key-only auth, a home per
// host, internal addresses unreachable from the user's machine but open between hosts, firewall-like
// port blocking, offline installers as strict as the real ones, fast start and a clean teardown.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHosts, killHost, simIdOfRoot, type HostSpec } from "./hosts.js";
import { startSim, type Sim } from "./sim.js";
import { updateState, type SimHost } from "./state.js";

let sim: Sim;
let key: string;
let hosts: SimHost[];

function specs(n: number, cluster: string, pub: string): HostSpec[] {
  return Array.from({ length: n }, (_, w) => ({ cluster, nodeName: null, zone: "us-east5-b", workerId: w, authorizedKeys: [pub] }));
}

function ssh(h: SimHost, cmd: string, timeoutMs = 30_000, input = ""): { stdout: string; stderr: string; code: number } {
  const r = spawnSync(
    "ssh",
    [
      "-i",
      key,
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "LogLevel=ERROR",
      "-o",
      "BatchMode=yes",
      "-o",
      "ConnectTimeout=5",
      `gcpuser@${h.externalIp}`,
      cmd,
    ],
    { encoding: "utf8", timeout: timeoutMs, input },
  );
  return { stdout: r.stdout, stderr: r.stderr, code: r.status ?? -1 };
}

/** What the host's sshd offers, as sorted "type base64" lines. */
function keyscan(h: SimHost): string[] {
  const r = spawnSync("ssh-keyscan", ["-T", "5", "-t", "ecdsa,ed25519,rsa", h.externalIp], { encoding: "utf8", timeout: 20_000 });
  return r.stdout
    .split("\n")
    .filter((l) => l.startsWith(h.externalIp))
    .map((l) => l.split(" ").slice(1, 3).join(" "))
    .sort();
}

function host(i: number): SimHost {
  const h = hosts[i];
  if (!h) throw new Error(`no host ${i}`);
  return h;
}

function connectResult(ip: string, port: number): Promise<{ ok: boolean; code: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const s = connect({ host: ip, port });
    s.setTimeout(3000, () => {
      s.destroy();
      resolve({ ok: false, code: "TIMEOUT", ms: Date.now() - t0 });
    });
    s.once("connect", () => {
      s.destroy();
      resolve({ ok: true, code: "", ms: Date.now() - t0 });
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve({ ok: false, code: e.code ?? "?", ms: Date.now() - t0 }));
  });
}

const numeric = (a: string): number => a.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);

beforeAll(async () => {
  sim = await startSim();
  key = join(sim.root, "keys", "test-cluster.key");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
  hosts = await createHosts(sim.root, specs(3, "c1", readFileSync(`${key}.pub`, "utf8")));
});

afterAll(async () => {
  await sim?.stop();
});

describe("simulated hosts", () => {
  it("accept ssh as gcpuser with the cluster key, with the VM's hostname", () => {
    for (const h of hosts) {
      const r = ssh(h, "hostname; whoami; echo $HOME");
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.split("\n").slice(0, 3)).toEqual([h.hostname, "gcpuser", "/home/gcpuser"]);
    }
  });

  it("give every host its own host keys (the guest agent's ecdsa, ed25519, rsa), as the state publishes them", () => {
    const offered = hosts.map((h) => keyscan(h));
    hosts.forEach((h, i) => {
      expect(h.hostKeys?.map((k) => k.type)).toEqual(["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]);
      expect(offered[i]).toEqual(h.hostKeys?.map((k) => `${k.type} ${k.key}`).sort());
      expect(h.bootedAt).toBeGreaterThan(0);
    });
    const ed25519 = hosts.map((h) => h.hostKeys?.find((k) => k.type === "ssh-ed25519")?.key);
    expect(new Set(ed25519).size).toBe(hosts.length);
  });

  it("replaceHostKeys: sshd offers new keys at once; the TPU API's copy stays unless published", async () => {
    const h = host(0);
    const before = (await sim.state()).hosts[h.id]?.hostKeys;
    const fresh = await sim.replaceHostKeys(h.id);
    expect(keyscan(h)).toEqual(fresh.map((k) => `${k.type} ${k.key}`).sort());
    expect(fresh.map((k) => k.key)).not.toContain(before?.[1]?.key);
    expect((await sim.state()).hosts[h.id]?.hostKeys).toEqual(before);
    expect(ssh(h, "whoami").stdout).toBe("gcpuser\n");
    const published = await sim.replaceHostKeys(h.id, { publish: true });
    expect((await sim.state()).hosts[h.id]?.hostKeys).toEqual(published);
  });

  it("refuse a key that was not authorized, and root", () => {
    const other = join(sim.root, "keys", "other.key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", other]);
    const r = spawnSync(
      "ssh",
      [
        "-i",
        other,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        `gcpuser@${host(0).externalIp}`,
        "true",
      ],
      { encoding: "utf8" },
    );
    expect(r.status).toBe(255);
    expect(r.stderr).toMatch(/Permission denied \(publickey\)/);
    const asRoot = spawnSync(
      "ssh",
      [
        "-i",
        key,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        `root@${host(0).externalIp}`,
        "true",
      ],
      { encoding: "utf8" },
    );
    expect(asRoot.status).toBe(255);
  });

  it("give every host its own home and /tmp", () => {
    expect(ssh(host(0), "echo only-on-h0 > ~/marker && echo x > /tmp/tmp-marker").code).toBe(0);
    expect(ssh(host(0), "cat ~/marker /tmp/tmp-marker").stdout).toBe("only-on-h0\nx\n");
    const r = ssh(host(1), "ls ~/marker /tmp/tmp-marker");
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/No such file/);
    expect(existsSync(join(sim.root, "hosts", host(0).id, "home", "marker"))).toBe(true);
  });

  it("hand out external addresses whose string order differs from numeric order", () => {
    const ext = hosts.map((h) => h.externalIp);
    expect(ext.every((a) => a.startsWith("198.18."))).toBe(true);
    expect(hosts.every((h) => h.internalIp.startsWith("198.19."))).toBe(true);
    expect([...ext].sort()).not.toEqual([...ext].sort((a, b) => numeric(a) - numeric(b)));
  });

  it("make internal addresses unreachable from the user's machine, fast", async () => {
    const r = await connectResult(host(1).internalIp, 22);
    expect(r.ok).toBe(false);
    expect(r.code).toMatch(/EHOSTUNREACH|ENETUNREACH/);
    expect(r.ms).toBeLessThan(1000);
  });

  it("let hosts reach each other on internal and external addresses", () => {
    const r = ssh(
      host(0),
      `timeout 3 bash -c '</dev/tcp/${host(1).internalIp}/22' && timeout 3 bash -c '</dev/tcp/${host(2).externalIp}/22' && echo open`,
    );
    expect(r.stdout.trim(), r.stderr).toBe("open");
  });

  it("blockPort drops one port from other hosts and the user's machine, not other ports or loopback", async () => {
    const h0 = host(0);
    const serve = (port: number) =>
      `setsid python3 -m http.server ${port} --bind 0.0.0.0 >/dev/null 2>&1 < /dev/null & ` +
      `for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/${port}) 2>/dev/null && exit 0; sleep 0.05; done; exit 1`;
    for (const port of [8080, 8081]) {
      expect((await sim.execOnHost(h0.id, `exec bash -c '${serve(port)}'`)).code).toBe(0);
    }
    const probe = (port: number) => `timeout 2 bash -c '</dev/tcp/${h0.internalIp}/${port}' && echo open || echo closed`;
    expect(ssh(host(1), `${probe(8080)}; ${probe(8081)}`).stdout).toBe("open\nopen\n");

    await sim.blockPort(h0.id, 8080);

    expect(ssh(host(1), `${probe(8080)}; ${probe(8081)}`).stdout).toBe("closed\nopen\n");
    expect((await connectResult(h0.externalIp, 8080)).code).toBe("TIMEOUT");
    expect((await connectResult(h0.externalIp, 8081)).ok).toBe(true);
    const local = ssh(h0, "timeout 2 bash -c '</dev/tcp/127.0.0.1/8080' && echo open");
    expect(local.stdout).toBe("open\n");
  });

  it("run a SkyPilot-style sglang-jax setup offline, as written", () => {
    const setup = [
      "set -e",
      "[ -d sglang-jax ] || git clone https://github.com/sgl-project/sglang-jax.git",
      "cd sglang-jax && git checkout main",
      'uv venv --python 3.12 && source .venv/bin/activate && uv pip install -e "python[all]"',
      "python -c \"import sgl_jax, os; print(os.environ['TPD_SIM_ROOT'])\"",
      "git rev-parse HEAD",
    ].join("\n");
    const r = ssh(host(2), "bash -s", 60_000, setup);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe(sim.root);
    expect(lines[1]).toMatch(/^[0-9a-f]{40}$/);
    // The second run finds the checkout and reuses it.
    expect(ssh(host(2), "bash -s", 60_000, setup).code).toBe(0);
  });

  it("fail like the real tools where the real tools fail", () => {
    const h = host(1);
    const uvOutside = ssh(h, "mkdir -p ~/plain && cd ~/plain && uv pip install requests");
    expect(uvOutside.code).toBe(2);
    expect(uvOutside.stderr).toContain(
      "error: No virtual environment found; run `uv venv` to create an environment, or pass `--system` to install into a non-virtual environment",
    );
    const pipOutside = ssh(h, "cd ~/plain && pip install requests");
    expect(pipOutside.code).toBe(1);
    expect(pipOutside.stderr).toContain("externally-managed-environment");
    const missingPath = ssh(h, 'cd ~/plain && uv venv -q && uv pip install -e "python[all]"');
    expect(missingPath.code).toBe(2);
    const clone = ssh(h, "git clone https://github.com/someone/other.git");
    expect(clone.code).toBe(128);
    expect(clone.stderr).toContain("Could not resolve host: github.com");
    const curl = ssh(h, "curl -sS https://pypi.org/simple/");
    expect(curl.code).toBe(6);
    expect(curl.stderr).toContain("curl: (6) Could not resolve host: pypi.org");
    const wget = ssh(h, "wget -q https://example.com/x");
    expect(wget.code).toBe(4);
  });

  it("serve the uv installer through curl and wget", () => {
    const r = ssh(
      host(1),
      "curl -LsSf https://astral.sh/uv/install.sh | sh && ~/.local/bin/uv --version && wget -qO- https://astral.sh/uv/install.sh | head -1",
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("everything's installed!");
    expect(r.stdout).toMatch(/^uv \d+\.\d+\.\d+$/m);
    expect(r.stdout).toContain("#!/bin/sh");
  });

  it("give a relaunch new addresses", async () => {
    const again = await createHosts(sim.root, specs(3, "c1", readFileSync(`${key}.pub`, "utf8")));
    const before = new Set(hosts.flatMap((h) => [h.externalIp, h.internalIp]));
    expect(again.some((h) => before.has(h.externalIp) || before.has(h.internalIp))).toBe(false);
    expect(new Set(again.map((h) => h.id)).size).toBe(3);
    expect(again.some((h) => hosts.some((o) => o.id === h.id))).toBe(false);
  });

  it("killHost ends the VM: ssh fails, the namespace is gone, the state says dead", async () => {
    const h = host(2);
    await killHost(sim.root, h.id);
    expect(ssh(h, "true", 10_000).code).toBe(255);
    expect(readdirSync("/run/netns")).not.toContain(h.netns);
    expect((await sim.state()).hosts[h.id]?.alive).toBe(false);
    expect((await sim.execOnHost(h.id, "true")).code).not.toBe(0);
  });

  it("start 16 hosts in under 10 s", async () => {
    const t0 = Date.now();
    const many = await createHosts(sim.root, specs(16, "big", readFileSync(`${key}.pub`, "utf8")));
    const ms = Date.now() - t0;
    console.log(`16 hosts started in ${ms} ms`);
    expect(many).toHaveLength(16);
    expect(ms).toBeLessThan(10_000);
    const last = many[15];
    if (!last) throw new Error("no 16th host");
    expect(ssh(last, "whoami").stdout).toBe("gcpuser\n");
  });
});

describe("preempt()", () => {
  it("kills a spot cluster's hosts and marks its TPU node PREEMPTED, keeping the cluster record", async () => {
    const nodeName = `projects/${sim.project}/locations/us-east5-b/nodes/spot-2ea485ef-head-aaaaaaaa-tpu`;
    const pub = readFileSync(`${key}.pub`, "utf8");
    const hs = await createHosts(
      sim.root,
      specs(2, "spot", pub).map((sp) => ({ ...sp, nodeName })),
    );
    await updateState(sim.root, (s) => {
      s.nodes[nodeName] = {
        name: nodeName,
        zone: "us-east5-b",
        acceleratorType: "v6e-8",
        runtimeVersion: "v2-alpha-tpuv6e",
        state: "READY",
        labels: {},
        preemptible: true,
        createTime: Date.now(),
        id: "42",
        hostIds: hs.map((h) => h.id),
      };
      s.clusters.spot = {
        name: "spot",
        nameOnCloud: "spot-2ea485ef",
        status: "UP",
        zone: "us-east5-b",
        region: "us-east5",
        spot: true,
        accelerator: "tpu-v6e-8",
        instanceType: null,
        numNodes: 1,
        labels: {},
        launchedAt: Date.now(),
        clusterHash: "x",
        slices: [{ nodeName, hostIds: hs.map((h) => h.id) }],
        headHostId: hs[0]?.id ?? "",
        jobs: [],
        lastEvent: null,
        autodown: false,
      };
    });
    await sim.preempt("spot");
    const s = await sim.state();
    expect(s.nodes[nodeName]?.state).toBe("PREEMPTED");
    expect(s.clusters.spot?.status).toBe("UP");
    expect(hs.map((h) => s.hosts[h.id]?.alive)).toEqual([false, false]);
    const netns = readdirSync("/run/netns");
    expect(hs.filter((h) => netns.includes(h.netns))).toEqual([]);
    await expect(sim.preempt("no-such-cluster")).rejects.toThrow(/no cluster/);
  });
});

describe("stop()", () => {
  it("leaves no namespace, link or directory of the sim behind, and can be called twice", async () => {
    const id = simIdOfRoot(sim.root);
    await sim.stop();
    await sim.stop();
    const netns = existsSync("/run/netns") ? readdirSync("/run/netns") : [];
    expect(netns.filter((n) => n.startsWith(`tpd-${id}-`))).toEqual([]);
    const links = readdirSync("/sys/class/net");
    expect(links.filter((l) => l.includes(id))).toEqual([]);
    expect(existsSync(sim.root)).toBe(false);
    // With no other sim running on this machine, the shared bridges and route are gone too.
    const otherSims = readdirSync("/tmp").filter((d) => d.startsWith("tpd-sim-"));
    if (otherSims.length === 0) {
      expect(netns.filter((n) => n.startsWith("tpd-"))).toEqual([]);
      expect(links.filter((l) => l.startsWith("tpd"))).toEqual([]);
      expect(execFileSync("ip", ["route", "show", "type", "unreachable"], { encoding: "utf8" })).not.toContain("198.19.0.0/16");
    }
  });
});
