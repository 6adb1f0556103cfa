// SSH host key pinning end to end on the simulated cloud: every host has its own keys, published through
// the Cloud TPU API's guest attributes. `up` pins them, host by host in each replica; a host whose key
// changes afterwards (an impostor at its address: the sim replaces its keys and restarts its sshd) is
// refused by status, restart, relaunch and proxy with "host key changed", before any login, so no secret
// reaches it. Without guest attributes (or on TPU7x) the first key seen is trusted, pinned, warned about and
// recorded; later connections check it. Two-replica deployments (v6e --nodes 2: two v6e-4 clusters) are
// pinned replica by replica, and a changed key in one replica fails the commands that would talk to it.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SimHost, SimHostKey } from "../sim/state.js";
import { type CliResult, type E2E, startE2E } from "./helpers.js";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

interface PinnedHost {
  rank: number;
  sshAlias: string;
  externalIp: string;
  hostKeys?: SimHostKey[];
  hostKeysFrom?: string;
}
interface ReplicaDoc {
  replica: number;
  cluster: string;
  phase: string;
  hosts: PinnedHost[];
}
interface StateDoc {
  replicas: ReplicaDoc[];
  history: { event: string; replica?: number; detail?: string }[];
}
interface HostKeysChanged {
  code: string;
  message: string;
  hint?: string;
}
interface StatusDoc {
  name: string;
  health: string;
  hostKeysChanged: HostKeysChanged | null;
  replicas: { replica: number; status: string; health: string; hostKeysChanged: HostKeysChanged | null }[];
}
interface ErrorDoc {
  ok: false;
  error: HostKeysChanged & { deployments?: StatusDoc[]; replicas?: { replica: number; error?: HostKeysChanged }[] };
}

const SECRETS = { HF_TOKEN: "hf_value_at_up_1111", SGLANG_API_KEY: "sk-value-at-up-1111" };
const LATER = { HF_TOKEN: "hf_value_after_change_2222", SGLANG_API_KEY: "sk-value-after-change-2222" };
const SECRET_FLAGS = ["--secret", "HF_TOKEN", "--api-key-secret", "SGLANG_API_KEY"];

function ok(r: CliResult): CliResult {
  if (r.code !== 0) throw new Error(`exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr.slice(-4000)}`);
  return r;
}

function state(name: string): StateDoc {
  const s = e.state(name);
  if (!s) throw new Error(`no state for ${name}`);
  return s as unknown as StateDoc;
}

/** Every host of the deployment, in replica order, each with its replica. */
function hostsOf(name: string): (PinnedHost & { replica: number })[] {
  return state(name).replicas.flatMap((r) => r.hosts.map((h) => ({ ...h, replica: r.replica })));
}

function replicaOf(name: string, replica: number): ReplicaDoc {
  const r = state(name).replicas.find((x) => x.replica === replica);
  if (!r) throw new Error(`${name} has no replica ${replica}`);
  return r;
}

function rank0Of(name: string, replica = 0): PinnedHost {
  const h = replicaOf(name, replica).hosts.find((x) => x.rank === 0);
  if (!h) throw new Error(`no rank 0 in replica ${replica} of ${name}`);
  return h;
}

/** `ssh-keygen -lf`'s fingerprint of a key, so the test does not trust the product's own fingerprinting. */
function fingerprint(k: SimHostKey): string {
  return execFileSync("ssh-keygen", ["-lf", "-"], { input: `${k.type} ${k.key}\n`, encoding: "utf8" }).split(" ")[1] ?? "";
}

const ed25519 = (keys: SimHostKey[] | undefined): SimHostKey => {
  const k = keys?.find((x) => x.type === "ssh-ed25519");
  if (!k) throw new Error("no ed25519 key");
  return k;
};

async function simHostOf(h: PinnedHost): Promise<SimHost> {
  const found = Object.values((await e.sim.state()).hosts).find((x) => x.alive && x.externalIp === h.externalIp);
  if (!found) throw new Error(`no sim host at ${h.externalIp}`);
  return found;
}

function sshdLog(hostId: string): string {
  return readFileSync(join(e.sim.root, "hosts", hostId, "sshd.log"), "utf8");
}

/** Hosts of the deployment on which any of the values sits in a file under ~/.tpu-deploy. */
async function hostsHolding(name: string, values: string[]): Promise<string[]> {
  const holding: string[] = [];
  for (const h of hostsOf(name)) {
    const sim = await simHostOf(h);
    const r = await e.sim.execOnHost(sim.id, `cat /home/gcpuser/.tpu-deploy/${name}/* 2>/dev/null || true`);
    if (values.some((v) => r.stdout.includes(v))) holding.push(`replica ${h.replica} rank ${h.rank}`);
  }
  return holding;
}

function tpuMethods(): string[] {
  try {
    return readFileSync(join(e.sim.root, "calls", "tpu.jsonl"), "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((l) => String((JSON.parse(l) as { method: string }).method));
  } catch {
    return [];
  }
}

function expectKeyChangeMessage(err: HostKeysChanged | null | undefined, who: PinnedHost, was: SimHostKey, now: SimHostKey): void {
  expect(err?.code).toBe("ssh_failed");
  expect(err?.message).toContain("host key changed");
  expect(err?.message).toContain(who.sshAlias);
  expect(err?.message).toContain(fingerprint(was)); // the pinned key
  expect(err?.message).toContain(fingerprint(now)); // the key offered
  expect(err?.hint).toMatch(/tpu-deploy down/);
}

function expectHostKeyChanged(r: CliResult, who: PinnedHost, was: SimHostKey, now: SimHostKey): void {
  expect(r.code, r.stderr).toBe(1);
  expectKeyChangeMessage((r.json as ErrorDoc).error, who, was, now);
}

describe("host keys from the Cloud TPU API", () => {
  let rank0: PinnedHost;
  let impostor: SimHost;
  let was: SimHostKey;
  let now: SimHostKey;

  it("up pins every host's own keys, read from the TPU API's guest attributes by worker position", async () => {
    const r = ok(await e.cli(["up", "-n", "pin", "--nodes", "4", ...SECRET_FLAGS], { env: SECRETS }));
    expect(r.stderr).not.toMatch(/first use/i);
    expect(r.stderr).toContain("host keys checked against it");
    expect(tpuMethods()).toContain("GetGuestAttributes");
    const hosts = hostsOf("pin");
    expect(hosts).toHaveLength(4);
    for (const h of hosts) {
      const sim = await simHostOf(h);
      expect(h.hostKeysFrom, h.sshAlias).toBe("tpu-api");
      expect(h.hostKeys, h.sshAlias).toEqual(sim.hostKeys);
    }
    expect(new Set(hosts.map((h) => ed25519(h.hostKeys).key)).size).toBe(4);
  });

  it("after rank 0's host key changes, status refuses it with the pinned and the offered fingerprints", async () => {
    rank0 = rank0Of("pin");
    impostor = await simHostOf(rank0);
    was = ed25519(impostor.hostKeys); // what the host had at `up`
    now = ed25519(await e.sim.replaceHostKeys(impostor.id));
    const r = await e.cli(["status", "pin", "--json"]);
    expectHostKeyChanged(r, rank0, was, now);
    const [d] = (r.json as ErrorDoc).error.deployments ?? [];
    expectKeyChangeMessage(d?.hostKeysChanged, rank0, was, now);
    expectKeyChangeMessage(d?.replicas[0]?.hostKeysChanged, rank0, was, now);
  });

  it("restart refuses it and sends no secret anywhere; the impostor never sees a login", async () => {
    const logBefore = sshdLog(impostor.id).length;
    const r = await e.cli(["restart", "pin", "--json"], { env: LATER });
    const leaked = await hostsHolding("pin", Object.values(LATER));
    const logins = sshdLog(impostor.id)
      .slice(logBefore)
      .split("\n")
      .filter((l) => l.includes("Accepted publickey"));
    expect({ code: r.code, leaked, logins }).toEqual({ code: 1, leaked: [], logins: [] });
    expectHostKeyChanged(r, rank0, was, now);
    // Nothing was stopped or started: the replica stays as it was, with the refusal as its last error.
    const rep = e.replica("pin");
    expect(rep.phase).toBe("serving");
    expect(rep.lastError?.message).toContain("host key changed");
  });

  it("relaunch refuses it too, and neither tears the cluster down nor relaunches it", async () => {
    const skyBefore = (await e.sim.skyCalls()).length;
    const tpuBefore = tpuMethods().length;
    const r = await e.cli(["relaunch", "pin", "--json"], { env: LATER });
    expectHostKeyChanged(r, rank0, was, now);
    const sky = (await e.sim.skyCalls()).slice(skyBefore).map((c) => c.argv[0]);
    expect(sky.filter((verb) => verb !== "status")).toEqual([]);
    expect(
      tpuMethods()
        .slice(tpuBefore)
        .filter((m) => m !== "ListNodes" && m !== "GetNode" && m !== "GetGuestAttributes"),
    ).toEqual([]);
    expect(await hostsHolding("pin", Object.values(LATER))).toEqual([]);
  });

  it("proxy refuses to carry the API key to it", async () => {
    const r = await e.cli(["proxy", "pin", "--local-port", "0", "--json"], { env: LATER, signal: AbortSignal.timeout(30_000) });
    expectHostKeyChanged(r, rank0, was, now);
  });

  it("down still takes the cluster down, leaving the impostor untouched", async () => {
    const logBefore = sshdLog(impostor.id).length;
    const r = ok(await e.cli(["down", "pin", "-y"]));
    expect(r.stderr).toContain("host key changed");
    expect(e.state("pin")).toBeUndefined();
    expect((await e.sim.state()).clusters.pin).toBeUndefined();
    expect(sshdLog(impostor.id).slice(logBefore)).not.toContain("Accepted publickey");
  });

  it("two replicas whose keys appear late: up waits for them (bounded) and pins each replica's hosts from the API", async () => {
    await e.sim.setFaults({ guestAttributes: { hostKeysDelayMs: 12_000 } });
    try {
      const before = tpuMethods().filter((m) => m === "GetGuestAttributes").length;
      const r = ok(await e.cli(["up", "-n", "late", "--nodes", "2"]));
      expect(r.stderr).not.toMatch(/first use/i);
      expect(tpuMethods().filter((m) => m === "GetGuestAttributes").length - before).toBeGreaterThan(2);
      const s = state("late");
      // v6e --nodes 2: two single-host v6e-4 clusters, each its own hosts and keys.
      expect(s.replicas.map((x) => x.cluster)).toEqual(["late", "late-r1"]);
      for (const x of s.replicas) {
        expect(x.hosts, x.cluster).toHaveLength(1);
        for (const h of x.hosts) {
          expect(h.sshAlias.startsWith(x.cluster), h.sshAlias).toBe(true);
          expect(h.hostKeysFrom, h.sshAlias).toBe("tpu-api");
          expect(h.hostKeys, h.sshAlias).toEqual((await simHostOf(h)).hostKeys);
        }
      }
      expect(new Set(hostsOf("late").map((h) => ed25519(h.hostKeys).key)).size).toBe(2);
    } finally {
      await e.sim.setFaults({});
    }
  });
});

describe("trust on first use", () => {
  it("without guest attributes: each replica's hosts are pinned on first use, warned about on stderr and in its history", async () => {
    await e.sim.setFaults({ guestAttributes: { noHostKeys: true } });
    try {
      writeFileSync(join(e.sim.home, "tofu.yaml"), "name: tofu\ntpu: {nodes: 2}\nlaunch: {hostKeyWait: 3s}\n");
      const r = ok(await e.cli(["up", "-c", "tofu.yaml"]));
      expect(r.stderr).toMatch(/trust(ed|ing)? on first use/i);
      const s = state("tofu");
      expect(s.replicas).toHaveLength(2);
      for (const h of hostsOf("tofu")) {
        const offered = ed25519((await simHostOf(h)).hostKeys);
        expect(h.hostKeysFrom).toBe("first-use");
        expect(h.hostKeys).toEqual([offered]);
        expect(r.stderr).toContain(fingerprint(offered));
      }
      // One event per replica, naming that replica's hosts only.
      const warned = s.history.filter((x) => x.event === "host-keys-first-use");
      expect(warned.map((x) => x.replica).sort()).toEqual([0, 1]);
      for (const x of s.replicas) {
        const detail = warned.find((w) => w.replica === x.replica)?.detail ?? "";
        for (const h of x.hosts) expect(detail).toContain(h.sshAlias);
        for (const other of s.replicas.filter((o) => o !== x)) for (const h of other.hosts) expect(detail).not.toContain(`${h.sshAlias} `);
      }
    } finally {
      await e.sim.setFaults({});
    }
  });

  it("later connections check the key pinned on first use: a change in replica 1 fails status, relaunch and proxy; replica 0 still serves", async () => {
    const head1 = rank0Of("tofu", 1);
    const sim = await simHostOf(head1);
    const now = ed25519(await e.sim.replaceHostKeys(sim.id));
    const was = ed25519(sim.hostKeys);

    const st = await e.cli(["status", "tofu", "--json"]);
    expectHostKeyChanged(st, head1, was, now);
    expect((st.json as ErrorDoc).error.message).toMatch(/first use/);
    const [d] = (st.json as ErrorDoc).error.deployments ?? [];
    expect(d?.replicas.map((x) => [x.replica, x.health, x.hostKeysChanged === null])).toEqual([
      [0, "serving", true],
      [1, "unknown", false],
    ]);

    // relaunch: replica 0 is healthy, replica 1 refused; nothing launched or torn down.
    const skyBefore = (await e.sim.skyCalls()).length;
    const rl = await e.cli(["relaunch", "tofu", "--json"]);
    expect(rl.code, rl.stderr).toBe(3); // mixed: replica 0 fine, replica 1 refused
    const reps = (rl.json as ErrorDoc).error.replicas ?? [];
    expect(reps.find((x) => x.replica === 0)?.error).toBeUndefined();
    expectKeyChangeMessage(reps.find((x) => x.replica === 1)?.error, head1, was, now);
    expect((await e.sim.skyCalls()).slice(skyBefore).filter((c) => c.argv[0] !== "status")).toEqual([]);

    // proxy: one head is an impostor, so the proxy does not start, even though replica 0 answers.
    const px = await e.cli(["proxy", "tofu", "--local-port", "0", "--json"], { signal: AbortSignal.timeout(30_000) });
    expectHostKeyChanged(px, head1, was, now);
  });

  it("down --replica 1 takes the impostor's replica down without contacting it; replica 0 keeps serving", async () => {
    const head1 = rank0Of("tofu", 1);
    const impostor = await simHostOf(head1);
    const logBefore = sshdLog(impostor.id).length;
    const r = ok(await e.cli(["down", "tofu", "--replica", "1", "-y"]));
    expect(r.stderr).toContain("host key changed");
    expect(sshdLog(impostor.id).slice(logBefore)).not.toContain("Accepted publickey");
    expect(state("tofu").replicas.map((x) => x.replica)).toEqual([0]);
    const st = ok(await e.cli(["status", "tofu", "--json"]));
    expect((st.json as { result: { deployments: StatusDoc[] } }).result.deployments[0]?.health).toBe("serving");
  });

  it("a state written before pinning: the next contact trusts each replica's keys on first use and pins them", async () => {
    const s = e.state("late") as unknown as StateDoc & Record<string, unknown>;
    const path = join(e.stateHome, "deployments", "late", "state.json");
    const legacy = {
      ...s,
      replicas: s.replicas.map((r) => ({ ...r, hosts: r.hosts.map(({ hostKeys: _k, hostKeysFrom: _f, ...h }) => h) })),
    };
    writeFileSync(path, JSON.stringify(legacy, null, 2));
    const r = ok(await e.cli(["status", "late"]));
    expect(r.stderr).toMatch(/first use/i);
    for (const h of hostsOf("late")) {
      expect(h.hostKeysFrom).toBe("first-use");
      expect(h.hostKeys).toEqual([ed25519((await simHostOf(h)).hostKeys)]);
    }
    const firstUse = () => state("late").history.filter((x) => x.event === "host-keys-first-use");
    expect(
      firstUse()
        .map((x) => x.replica)
        .sort(),
    ).toEqual([0, 1]);
    // Pinned now: the next status neither warns nor records again.
    const again = ok(await e.cli(["status", "late"]));
    expect(again.stderr).not.toMatch(/first use/i);
    expect(firstUse()).toHaveLength(2);
  });

  it("TPU7x (no Cloud TPU API): trusted on first use, with the reason", async () => {
    const r = ok(await e.cli(["up", "-n", "iron", "--tpu", "v7", "--nodes", "2"]));
    expect(r.stderr).toMatch(/TPU7x/);
    expect(r.stderr).toMatch(/first use/i);
    const hosts = hostsOf("iron");
    expect(hosts).toHaveLength(2);
    for (const h of hosts) {
      expect(h.hostKeysFrom).toBe("first-use");
      expect(h.hostKeys).toEqual([ed25519((await simHostOf(h)).hostKeys)]);
    }
  });
});
