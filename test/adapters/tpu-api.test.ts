// The TpuApi adapter with the real @google-cloud/tpu v2 client against the TPU API emulator on a temp root.
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createTpuApi, nodesOfCluster, TpuApiError, type TpuApi } from "../../src/adapters/tpu-api.js";
import { CloudApiError } from "../../src/errors.js";
import { emptyState, readCalls, readState, writeInitialState, type SimHost, type SimState } from "../sim/state.js";
import { startTpuEmulator, type TpuEmulator } from "../sim/tpu-emulator.js";

const PROJECT = "tpd-sim-project";
const ZONE = "us-east5-b";
const nodeName = (id: string, zone = ZONE): string => `projects/${PROJECT}/locations/${zone}/nodes/${id}`;
const HEAD = nodeName("sgl-2ea485ef-head-0k3j9x2a-tpu");
const WORKER = nodeName("sgl-2ea485ef-worker-9zq8w7v6-tpu");
const SPOT = nodeName("spot-2ea485ef-head-7f3k2m1q-tpu");
const OTHER = nodeName("other-2ea485ef-head-aaaaaaaa-tpu");
const FAR = nodeName("far-2ea485ef-head-bbbbbbbb-tpu", "us-central1-b");

function fixture(): SimState {
  const s = emptyState(PROJECT, "2ea485ef");
  let seq = 0;
  const addNode = (
    name: string,
    cluster: string,
    head: boolean,
    ips: [string, string][],
    extra: Partial<SimState["nodes"][string]> = {},
  ): void => {
    const hostIds = ips.map(([ext, int], workerId): string => {
      seq += 1;
      const h: SimHost = {
        id: `h${seq}`,
        netns: `tpd-h${seq}`,
        externalIp: ext,
        internalIp: int,
        workerId,
        cluster,
        nodeName: name,
        zone: ZONE,
        hostname: `t1v-n-${seq}-w-${workerId}`,
        alive: true,
        // Booted long ago: the guest agent has published the keys. The blob only has to be well-formed base64.
        hostKeys: [{ type: "ssh-ed25519", key: Buffer.from(`ed25519 key of h${seq}`).toString("base64") }],
        bootedAt: 1,
      };
      s.hosts[h.id] = h;
      return h.id;
    });
    s.nodes[name] = {
      name,
      zone: /locations\/([^/]+)/.exec(name)?.[1] ?? ZONE,
      acceleratorType: "v6e-16",
      runtimeVersion: "v2-alpha-tpuv6e",
      state: "READY",
      preemptible: false,
      createTime: 1_760_000_000_500,
      id: String(1000 + seq),
      hostIds,
      labels: { "skypilot-cluster-name": cluster, "ray-cluster-name": cluster, "skypilot-head-node": head ? "1" : "0" },
      ...extra,
    };
  };
  // Two slices of one cluster (num_nodes: 2); the worker slice sorts before the head by name.
  addNode(HEAD, "sgl-2ea485ef", true, [
    ["198.18.3.11", "198.19.3.11"],
    ["198.18.3.5", "198.19.3.5"],
    ["198.18.3.23", "198.19.3.23"],
    ["198.18.3.7", "198.19.3.7"],
  ]);
  addNode(WORKER, "sgl-2ea485ef", false, [
    ["198.18.4.9", "198.19.4.9"],
    ["198.18.4.10", "198.19.4.10"],
    ["198.18.4.1", "198.19.4.1"],
    ["198.18.4.2", "198.19.4.2"],
  ]);
  addNode(SPOT, "spot-2ea485ef", true, [["198.18.5.1", "198.19.5.1"]], { acceleratorType: "v6e-4", state: "PREEMPTED", preemptible: true });
  addNode(OTHER, "other-2ea485ef", true, [["198.18.6.1", "198.19.6.1"]], { acceleratorType: "v6e-8", state: "CREATING" });
  addNode(FAR, "far-2ea485ef", true, [["198.18.7.1", "198.19.7.1"]]);
  return s;
}

interface Rig {
  root: string;
  emu: TpuEmulator;
  api: TpuApi;
}
const rigs: Rig[] = [];

async function rig(opts: { deleteDelayMs?: number } = {}): Promise<Rig> {
  const root = await mkdtemp(join(tmpdir(), "tpd-tpu-api-"));
  await writeInitialState(root, fixture());
  // The server returns at most 2 items per page, so every list needs several pages.
  const emu = await startTpuEmulator({ root, maxPageSize: 2, deleteDelayMs: opts.deleteDelayMs ?? 150 });
  const api = await createTpuApi({ TPU_EMULATOR_HOST: `127.0.0.1:${emu.port}` });
  const r = { root, emu, api };
  rigs.push(r);
  return r;
}

afterEach(async () => {
  for (const r of rigs.splice(0)) {
    await r.api.close();
    await r.emu.close();
    await rm(r.root, { recursive: true, force: true });
  }
});

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => new Error("expected a rejection"),
    (e: unknown) => e,
  );
}

describe("createTpuApi against the emulator", () => {
  it("lists every node of a zone across pages, normalized, endpoints in TPU worker order", async () => {
    const { api, root } = await rig();
    const nodes = await api.listNodes(PROJECT, ZONE);
    expect(nodes.map((n) => n.name).sort()).toEqual([HEAD, WORKER, SPOT, OTHER].sort());
    expect((await readCalls(root, "tpu")).filter((c) => c.method === "ListNodes")).toHaveLength(2);

    const head = nodes.find((n) => n.name === HEAD);
    expect(head).toEqual({
      name: HEAD,
      zone: ZONE,
      acceleratorType: "v6e-16",
      state: "READY",
      labels: { "skypilot-cluster-name": "sgl-2ea485ef", "ray-cluster-name": "sgl-2ea485ef", "skypilot-head-node": "1" },
      preemptible: false,
      spot: false,
      createTime: "2025-10-09T08:53:20.500Z",
      endpoints: [
        { workerId: 0, internalIp: "198.19.3.11", externalIp: "198.18.3.11" },
        { workerId: 1, internalIp: "198.19.3.5", externalIp: "198.18.3.5" },
        { workerId: 2, internalIp: "198.19.3.23", externalIp: "198.18.3.23" },
        { workerId: 3, internalIp: "198.19.3.7", externalIp: "198.18.3.7" },
      ],
    });
    expect(nodes.find((n) => n.name === SPOT)).toMatchObject({ state: "PREEMPTED", preemptible: true, acceleratorType: "v6e-4" });
  });

  it("selects a cluster's nodes by the skypilot-cluster-name label, head slice first", async () => {
    const { api } = await rig();
    const nodes = await api.listNodes(PROJECT, ZONE);
    expect(nodesOfCluster(nodes, "sgl-2ea485ef").map((n) => n.name)).toEqual([HEAD, WORKER]);
    expect(nodesOfCluster(nodes, "sgl")).toEqual([]);
  });

  it("gets a node, and null for a missing one", async () => {
    const { api } = await rig();
    expect(await api.getNode(OTHER)).toMatchObject({
      name: OTHER,
      state: "CREATING",
      endpoints: [{ workerId: 0, internalIp: "198.19.6.1" }],
    });
    expect(await api.getNode(nodeName("gone-2ea485ef-head-cccccccc-tpu"))).toBeNull();
    // A project we cannot see is IAM's 403, never "gone": relaunch must not read it as a deleted node.
    const denied = await failure(api.getNode(HEAD.replace(PROJECT, "someone-else")));
    expect(denied).toMatchObject({ status: "PERMISSION_DENIED", method: "getNode", code: "cloud_api" });
    const err = await failure(api.getNode("sgl-2ea485ef"));
    expect(err).toBeInstanceOf(TpuApiError);
    expect(err).toMatchObject({ status: "INVALID_ARGUMENT", method: "getNode", code: "cloud_api" });
  });

  it("deletes a node: resolves once the operation is done and the node is gone; deleting it again is a no-op", async () => {
    const { api, root } = await rig();
    await api.deleteNode(SPOT);
    expect((await readState(root)).nodes[SPOT]).toBeUndefined();
    expect(await api.getNode(SPOT)).toBeNull();
    await api.deleteNode(SPOT);
    const methods = (await readCalls(root, "tpu")).map((c) => c.method);
    expect(methods.filter((m) => m === "DeleteNode")).toHaveLength(2);
    expect(methods).toContain("GetOperation");
  });

  it("stops waiting for a deletion when the signal aborts, without cancelling it", async () => {
    const { api, root } = await rig({ deleteDelayMs: 60_000 });
    const ac = new AbortController();
    const started = Date.now();
    const p = api.deleteNode(HEAD, { signal: ac.signal });
    setTimeout(() => ac.abort(), 300);
    const err = await failure(p);
    expect(err).toMatchObject({ name: "AbortError" });
    expect(Date.now() - started).toBeLessThan(2000);
    expect((await readState(root)).nodes[HEAD]?.state).toBe("DELETING");
    expect((await readCalls(root, "tpu")).map((c) => c.method)).not.toContain("CancelOperation");
  });

  it("lists the accelerator types of a zone across pages", async () => {
    const { api } = await rig();
    expect(await api.listAcceleratorTypes(PROJECT, ZONE)).toEqual([
      "v6e-1",
      "v6e-4",
      "v6e-8",
      "v6e-16",
      "v6e-32",
      "v6e-64",
      "v6e-128",
      "v6e-256",
    ]);
  });

  it("reads guest attributes per worker, in worker order, through the real client", async () => {
    const { api, root } = await rig();
    const s = await readState(root);
    const ga = await api.getGuestAttributes(HEAD);
    expect(ga.map((g) => g.queryValue.items.filter((i) => i.namespace === "hostkeys").map((i) => i.value))).toEqual(
      (s.nodes[HEAD]?.hostIds ?? []).map((id) => [s.hosts[id]?.hostKeys?.[0]?.key]),
    );
    const one = await api.getGuestAttributes(HEAD, { workerIds: ["3"], queryPath: "hostkeys/" });
    expect(one).toEqual([
      {
        queryPath: "hostkeys/",
        queryValue: {
          items: [{ namespace: "hostkeys", key: "ssh-ed25519", value: s.hosts[s.nodes[HEAD]?.hostIds[3] ?? ""]?.hostKeys?.[0]?.key }],
        },
      },
    ]);
    const missing = await failure(api.getGuestAttributes(nodeName("gone")));
    expect(missing).toMatchObject({ status: "NOT_FOUND", method: "getGuestAttributes" });
  });

  it("makes no write RPC when it only reads", async () => {
    const { api, root } = await rig();
    await api.listNodes(PROJECT, ZONE);
    await api.getNode(HEAD);
    await api.listAcceleratorTypes(PROJECT, ZONE);
    await api.getGuestAttributes(HEAD);
    const methods = new Set((await readCalls(root, "tpu")).map((c) => String(c.method)));
    expect([...methods].sort()).toEqual(["GetGuestAttributes", "GetNode", "ListAcceleratorTypes", "ListNodes"]);
  });
});

describe("createTpuApi failures", () => {
  it("fails fast with a hint when the emulator is down", async () => {
    const root = await mkdtemp(join(tmpdir(), "tpd-tpu-api-"));
    await writeInitialState(root, fixture());
    const emu = await startTpuEmulator({ root });
    await emu.close();
    const api = await createTpuApi({ TPU_EMULATOR_HOST: `127.0.0.1:${emu.port}` });
    try {
      const started = Date.now();
      const err = await failure(api.listNodes(PROJECT, ZONE));
      expect(Date.now() - started).toBeLessThan(3000);
      expect(err).toBeInstanceOf(CloudApiError);
      expect(err).toMatchObject({ status: "UNAVAILABLE", method: "listNodes", code: "cloud_api" });
      expect((err as TpuApiError).hint).toContain(`TPU_EMULATOR_HOST=127.0.0.1:${emu.port}`);
      expect((err as TpuApiError).cause).toMatchObject({ code: 14 });
    } finally {
      await api.close();
      await rm(root, { recursive: true, force: true });
    }
  });

  it("rejects a TPU_EMULATOR_HOST that is not host:port", async () => {
    const err = await failure(createTpuApi({ TPU_EMULATOR_HOST: "127.0.0.1" }));
    expect(err).toBeInstanceOf(CloudApiError);
    expect((err as CloudApiError).hint).toContain("TPU_EMULATOR_HOST=127.0.0.1:<port>");
  });
});

describe("gRPC stays out of the rest of src/", () => {
  it("only src/adapters/tpu-api.ts touches the Google client libraries, and only lazily", async () => {
    const src = join(import.meta.dirname, "..", "..", "src");
    const files = (await readdir(src, { recursive: true })).filter((f) => f.endsWith(".ts"));
    const libs = /["'](@google-cloud\/tpu|google-gax|google-auth-library|@grpc\/[^"']+)["']/;
    const offenders: string[] = [];
    for (const f of files) {
      const lines = (await readFile(join(src, f), "utf8")).split("\n");
      for (const line of lines) {
        if (!libs.test(line)) continue;
        const lazy = f === join("adapters", "tpu-api.ts") && (/^import type /.test(line) || /(^|[^.\w])import\(/.test(line));
        if (!lazy) offenders.push(`${f}: ${line.trim()}`);
      }
    }
    expect(offenders).toEqual([]);
  });
});
