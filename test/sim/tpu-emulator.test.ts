// The TPU API emulator, seen through the real @google-cloud/tpu v2 client: it must answer like the real API
// (string enums, worker-ordered endpoints, NOT_FOUND / INVALID_ARGUMENT, LROs polled via Operations).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { protos, v2 } from "@google-cloud/tpu";
import { grpc, type ClientOptions } from "google-gax";
import { PassThroughClient } from "google-auth-library";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { emptyState, readCalls, readState, updateState, writeFaults, writeInitialState, type SimHost, type SimState } from "./state.js";
import { startTpuEmulator, type TpuEmulator } from "./tpu-emulator.js";

const PROJECT = "tpd-sim-project";
const ZONE = "us-east5-b";
const V6E16 = `projects/${PROJECT}/locations/${ZONE}/nodes/sgl-v6e16-2ea485ef-head-0k3j9x2a-tpu`;
const V6E4 = `projects/${PROJECT}/locations/${ZONE}/nodes/sgl-v6e4-2ea485ef-head-7f3k2m1q-tpu`;
const OTHER_ZONE = `projects/${PROJECT}/locations/us-central1-b/nodes/other-2ea485ef-head-aaaaaaaa-tpu`;

function host(id: string, workerId: number, ext: string, int: string, cluster: string, nodeName: string | null): SimHost {
  return {
    id,
    netns: `tpd-${id}`,
    externalIp: ext,
    internalIp: int,
    workerId,
    cluster,
    nodeName,
    zone: ZONE,
    hostname: `t1v-n-${id}-w-${workerId}`,
    alive: true,
  };
}

function fixture(): SimState {
  const s = emptyState(PROJECT, "2ea485ef");
  // Worker order deliberately differs from host-id and string order of the external IPs.
  const v16 = [
    host("h3", 0, "198.18.3.11", "198.19.3.11", "sgl-v6e16", V6E16),
    host("h1", 1, "198.18.3.5", "198.19.3.5", "sgl-v6e16", V6E16),
    host("h4", 2, "198.18.3.23", "198.19.3.23", "sgl-v6e16", V6E16),
    host("h2", 3, "198.18.3.7", "198.19.3.7", "sgl-v6e16", V6E16),
  ];
  const v4 = [host("h5", 0, "198.18.4.2", "198.19.4.2", "sgl-v6e4", V6E4)];
  const v7 = [host("h6", 0, "198.18.5.2", "198.19.5.2", "sgl-v7", null), host("h7", 1, "198.18.5.3", "198.19.5.3", "sgl-v7", null)];
  for (const h of [...v16, ...v4, ...v7]) s.hosts[h.id] = h;
  const labels = (c: string): Record<string, string> => ({
    "skypilot-cluster-name": `${c}-2ea485ef`,
    "ray-cluster-name": `${c}-2ea485ef`,
    "skypilot-head-node": "1",
    "ray-node-type": "head",
  });
  s.nodes[V6E16] = {
    name: V6E16,
    zone: ZONE,
    acceleratorType: "v6e-16",
    runtimeVersion: "v2-alpha-tpuv6e",
    state: "READY",
    labels: labels("sgl-v6e16"),
    preemptible: false,
    createTime: 1_760_000_000_123,
    id: "7781234567890123456",
    hostIds: v16.map((h) => h.id),
  };
  s.nodes[V6E4] = {
    name: V6E4,
    zone: ZONE,
    acceleratorType: "v6e-4",
    runtimeVersion: "v2-alpha-tpuv6e",
    state: "PREEMPTED",
    labels: labels("sgl-v6e4"),
    preemptible: true,
    createTime: 1_760_000_100_000,
    id: "7781234567890999999",
    hostIds: ["h5"],
  };
  s.nodes[OTHER_ZONE] = {
    name: OTHER_ZONE,
    zone: "us-central1-b",
    acceleratorType: "v6e-8",
    runtimeVersion: "v2-alpha-tpuv6e",
    state: "CREATING",
    labels: labels("other"),
    preemptible: false,
    createTime: 1_760_000_200_000,
    id: "42",
    hostIds: [],
  };
  return s;
}

let root: string;
let emu: TpuEmulator;
let client: v2.TpuClient;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "tpd-tpu-emu-"));
  await writeInitialState(root, fixture());
  emu = await startTpuEmulator({ root, maxPageSize: 2, deleteDelayMs: 150 });
  client = new v2.TpuClient({
    apiEndpoint: "127.0.0.1",
    port: emu.port,
    sslCreds: grpc.credentials.createInsecure(),
    authClient: new PassThroughClient() as unknown as ClientOptions["authClient"],
  });
});

afterEach(async () => {
  await client.close().catch(() => undefined);
  await emu.close();
  await rm(root, { recursive: true, force: true });
});

async function rpcError(p: Promise<unknown>): Promise<{ code: unknown; details: unknown }> {
  const err: unknown = await p.then(
    () => new Error("expected the call to fail"),
    (e: unknown) => e,
  );
  const e = err as { code?: unknown; details?: unknown };
  return { code: e.code, details: e.details };
}

describe("TPU API emulator", () => {
  it("serves a node like the real API: string enums, endpoints in worker order, v6e config", async () => {
    const [node] = await client.getNode({ name: V6E16 });
    expect(node).toMatchObject({
      name: V6E16,
      acceleratorType: "v6e-16",
      state: "READY",
      health: "HEALTHY",
      apiVersion: "V2",
      runtimeVersion: "v2-alpha-tpuv6e",
      id: "7781234567890123456",
      createTime: { seconds: "1760000000", nanos: 123_000_000 },
      schedulingConfig: { preemptible: false, spot: false },
      acceleratorConfig: { type: "V6E", topology: "4x4" },
      networkConfig: { enableExternalIps: true },
      labels: { "skypilot-cluster-name": "sgl-v6e16-2ea485ef" },
    });
    expect(node.networkEndpoints?.map((e) => [e.ipAddress, e.port, e.accessConfig?.externalIp])).toEqual([
      ["198.19.3.11", 8470, "198.18.3.11"],
      ["198.19.3.5", 8470, "198.18.3.5"],
      ["198.19.3.23", 8470, "198.18.3.23"],
      ["198.19.3.7", 8470, "198.18.3.7"],
    ]);
  });

  it("reflects state.json changes on the next call (no caching)", async () => {
    await updateState(root, (s) => {
      const n = s.nodes[V6E16];
      if (n) n.state = "PREEMPTED";
    });
    const [node] = await client.getNode({ name: V6E16 });
    expect(node.state).toBe("PREEMPTED");
    expect(node.health).toBe("HEALTH_UNSPECIFIED");
  });

  it("serves the states GCP puts a node in on its own (maintenance, reboot, stop, lost contact) as the proto's enum names", async () => {
    const { updateState } = await import("./state.js");
    for (const state of ["REPAIRING", "RESTARTING", "STOPPING", "STOPPED", "UNKNOWN"] as const) {
      await updateState(root, (s) => {
        const n = s.nodes[V6E16];
        if (n) n.state = state;
      });
      const [node] = await client.getNode({ name: V6E16 });
      expect(node.state).toBe(state);
      expect(node.health).toBe("HEALTH_UNSPECIFIED");
      const [listed] = await client.listNodes({ parent: `projects/${PROJECT}/locations/${ZONE}` }, { autoPaginate: true });
      expect(listed.find((n) => n.name === V6E16)?.state).toBe(state);
    }
  });

  it("answers NOT_FOUND for a missing node, PERMISSION_DENIED for another project, INVALID_ARGUMENT for a malformed name", async () => {
    const missing = `projects/${PROJECT}/locations/${ZONE}/nodes/nope`;
    expect(await rpcError(client.getNode({ name: missing }))).toEqual({
      code: grpc.status.NOT_FOUND,
      details: `Resource '${missing}' was not found`,
    });
    const otherProject = V6E16.replace(PROJECT, "someone-else");
    expect(await rpcError(client.getNode({ name: otherProject }))).toEqual({
      code: grpc.status.PERMISSION_DENIED,
      details: `Permission 'tpu.nodes.get' denied on resource '//tpu.googleapis.com/${otherProject}' (or it may not exist).`,
    });
    expect((await rpcError(client.getNode({ name: "sgl-v6e16" }))).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await rpcError(client.listNodes({ parent: `projects/${PROJECT}/zones/${ZONE}` }, { autoPaginate: false }))).code).toBe(
      grpc.status.INVALID_ARGUMENT,
    );
    expect((await rpcError(client.listNodes({ parent: `projects/someone-else/locations/${ZONE}` }, { autoPaginate: false }))).code).toBe(
      grpc.status.PERMISSION_DENIED,
    );
  });

  it("pages ListNodes with pageSize/pageToken and filters by zone; '-' lists every zone", async () => {
    const parent = `projects/${PROJECT}/locations/${ZONE}`;
    const [page1, next1] = await client.listNodes({ parent, pageSize: 1 }, { autoPaginate: false });
    expect(page1.map((n) => n.name)).toEqual([V6E16]);
    expect(next1?.pageToken).toBeTruthy();
    const [page2, next2] = await client.listNodes({ parent, pageSize: 1, pageToken: next1?.pageToken ?? "" }, { autoPaginate: false });
    expect(page2.map((n) => [n.name, n.state, n.schedulingConfig?.preemptible])).toEqual([[V6E4, "PREEMPTED", true]]);
    expect(next2).toBeNull();

    // maxPageSize 2 caps a larger request; the TPU7x hosts have no node and never appear.
    const [all, nextAll] = await client.listNodes({ parent: `projects/${PROJECT}/locations/-`, pageSize: 10 }, { autoPaginate: false });
    expect(all).toHaveLength(2);
    expect(nextAll?.pageToken).toBeTruthy();
    const [rest] = await client.listNodes(nextAll ?? {}, { autoPaginate: false });
    expect([...all, ...rest].map((n) => n.name).sort()).toEqual([V6E4, V6E16, OTHER_ZONE].sort());

    const bad = await rpcError(client.listNodes({ parent, pageToken: "garbage" }, { autoPaginate: false }));
    expect(bad.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it("deletes through an LRO: DELETING at once, gone when the operation is done", async () => {
    const [op] = await client.deleteNode({ name: V6E4 });
    expect(op.name).toMatch(new RegExp(`^projects/${PROJECT}/locations/${ZONE}/operations/operation-\\d+-[0-9a-f]+$`));
    expect(op.done).toBe(false);
    expect((await readState(root)).nodes[V6E4]?.state).toBe("DELETING");
    const [, metadata] = await op.promise();
    expect(metadata).toMatchObject({ target: V6E4, verb: "delete", apiVersion: "v2" });
    expect((await readState(root)).nodes[V6E4]).toBeUndefined();
    expect((await rpcError(client.getNode({ name: V6E4 }))).code).toBe(grpc.status.NOT_FOUND);

    const [done] = await client.getOperation(new protos.google.longrunning.GetOperationRequest({ name: op.name ?? "" }));
    expect(done.done).toBe(true);
    expect(done.response?.type_url).toBe("type.googleapis.com/google.protobuf.Empty");
    const metaType = protos.google.cloud.tpu.v2.OperationMetadata;
    expect(metaType.decode(done.metadata?.value as Uint8Array).endTime).toBeTruthy();

    expect((await rpcError(client.deleteNode({ name: V6E4 }))).code).toBe(grpc.status.NOT_FOUND);
  });

  it("lists v6e accelerator types and runtime versions in offered zones only", async () => {
    // maxPageSize is 2 here, so a first page of 2 whatever pageSize asks.
    const [types] = await client.listAcceleratorTypes(
      { parent: `projects/${PROJECT}/locations/${ZONE}`, pageSize: 100 },
      { autoPaginate: false },
    );
    expect(types.map((t) => [t.type, t.acceleratorConfigs?.[0]?.type, t.acceleratorConfigs?.[0]?.topology])).toEqual([
      ["v6e-1", "V6E", "1x1"],
      ["v6e-4", "V6E", "2x2"],
    ]);
    const [none] = await client.listAcceleratorTypes({ parent: `projects/${PROJECT}/locations/europe-west1-b` }, { autoPaginate: false });
    expect(none).toEqual([]);
    const [runtimes] = await client.listRuntimeVersions(
      { parent: `projects/${PROJECT}/locations/${ZONE}`, pageSize: 100 },
      { autoPaginate: false },
    );
    expect(runtimes.map((r) => r.version)).toHaveLength(2);
  });

  it("answers GetGuestAttributes per worker and UNIMPLEMENTED for what it does not serve", async () => {
    const [ga] = await client.getGuestAttributes({ name: V6E16, queryPath: "testing/" });
    expect(ga.guestAttributes?.map((g) => g.queryPath)).toEqual(["testing/", "testing/", "testing/", "testing/"]);
    const [one] = await client.getGuestAttributes({ name: V6E16, workerIds: ["2"] });
    expect(one.guestAttributes).toHaveLength(1);
    expect((await rpcError(client.getGuestAttributes({ name: V6E16, workerIds: ["4"] }))).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await rpcError(client.createNode({ parent: `projects/${PROJECT}/locations/${ZONE}`, nodeId: "x", node: {} }))).code).toBe(
      grpc.status.UNIMPLEMENTED,
    );
  });

  it("shows each worker's host keys by position (no worker id), only some time after boot, and never with noHostKeys", async () => {
    const keysOf = (id: string) => [
      { type: "ecdsa-sha2-nistp256", key: `AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY${id}` },
      { type: "ssh-ed25519", key: `AAAAC3NzaC1lZDI1NTE5${id}` },
      { type: "ssh-rsa", key: `AAAAB3NzaC1yc2E${id}` },
    ];
    await updateState(root, (s) => {
      for (const h of Object.values(s.hosts)) {
        h.hostKeys = keysOf(h.id);
        h.bootedAt = Date.now();
      }
    });
    await writeFaults(root, { guestAttributes: { hostKeysDelayMs: 500 } });
    const hostKeyItems = (ga: protos.google.cloud.tpu.v2.IGetGuestAttributesResponse) =>
      ga.guestAttributes?.map((g) => (g.queryValue?.items ?? []).filter((i) => i.namespace === "hostkeys").map((i) => [i.key, i.value]));
    const [early] = await client.getGuestAttributes({ name: V6E16 });
    expect(hostKeyItems(early)).toEqual([[], [], [], []]);
    expect(early.guestAttributes?.[0]?.queryValue?.items?.map((i) => i.key)).toEqual(["hostname"]);
    await new Promise((r) => setTimeout(r, 600));
    const [all] = await client.getGuestAttributes({ name: V6E16 });
    // Worker order (h3, h1, h4, h2), not host order.
    expect(hostKeyItems(all)?.map((items) => items.find(([k]) => k === "ssh-ed25519")?.[1])).toEqual(
      ["h3", "h1", "h4", "h2"].map((id) => `AAAAC3NzaC1lZDI1NTE5${id}`),
    );
    expect(hostKeyItems(all)?.[0]).toEqual(keysOf("h3").map((k) => [k.type, k.key]));
    expect(Object.keys(all.guestAttributes?.[0] ?? {}).sort()).toEqual(["queryPath", "queryValue"]);
    const [one] = await client.getGuestAttributes({ name: V6E16, workerIds: ["2"], queryPath: "hostkeys/" });
    expect(one.guestAttributes?.[0]?.queryValue?.items?.map((i) => [i.namespace, i.key, i.value])).toEqual(
      keysOf("h4").map((k) => ["hostkeys", k.type, k.key]),
    );
    const [ed] = await client.getGuestAttributes({ name: V6E16, workerIds: ["0"], queryPath: "hostkeys/ssh-ed25519" });
    expect(ed.guestAttributes?.[0]?.queryValue?.items?.map((i) => i.value)).toEqual(["AAAAC3NzaC1lZDI1NTE5h3"]);
    await writeFaults(root, { guestAttributes: { noHostKeys: true } });
    const [none] = await client.getGuestAttributes({ name: V6E16 });
    expect(hostKeyItems(none)).toEqual([[], [], [], []]);
  });

  it("records every RPC in calls/tpu.jsonl, reads and writes alike", async () => {
    await client.getNode({ name: V6E16 });
    await client.listNodes({ parent: `projects/${PROJECT}/locations/${ZONE}` }, { autoPaginate: false });
    await rpcError(client.createNode({ parent: `projects/${PROJECT}/locations/${ZONE}`, nodeId: "x", node: {} }));
    const calls = await readCalls(root, "tpu");
    expect(calls.map((c) => c.method)).toEqual(["GetNode", "ListNodes", "CreateNode"]);
    expect(calls[0]).toMatchObject({ request: { name: V6E16 } });
    expect(typeof calls[0]?.t).toBe("number");
  });
});
