// The GCE metadata emulator must answer every simulated VM with that VM's own identity (libtpu and
// sglang-jax read the worker number from it), and refuse requests exactly where GCE refuses them.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHosts } from "./hosts.js";
import { projectNumber } from "./metadata-server.js";
import { startSim, type Sim } from "./sim.js";
import { readSimConfig, updateState, type SimHost } from "./state.js";

const ZONE = "us-east5-b";
const CLUSTER = "sgl-v6e16";
let sim: Sim;
let key: string;
let hosts: SimHost[];
let metadataAddr: string;
let nodeName: string;

function ssh(h: SimHost, cmd: string): { stdout: string; stderr: string; code: number } {
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
      `gcpuser@${h.externalIp}`,
      cmd,
    ],
    { encoding: "utf8", timeout: 30_000 },
  );
  return { stdout: r.stdout, stderr: r.stderr, code: r.status ?? -1 };
}

const md = (path: string) => `curl -sS -H 'Metadata-Flavor: Google' "http://$GCE_METADATA_HOST/computeMetadata/v1/${path}"; echo`;

beforeAll(async () => {
  sim = await startSim();
  key = join(sim.root, "keys", "c.key");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
  metadataAddr = (await readSimConfig(sim.root)).metadataAddr;
  nodeName = `projects/${sim.project}/locations/${ZONE}/nodes/${CLUSTER}-2ea485ef-head-0k3j9x2a-tpu`;
  const pub = readFileSync(`${key}.pub`, "utf8");
  hosts = await createHosts(
    sim.root,
    [0, 1, 2, 3].map((w) => ({ cluster: CLUSTER, nodeName, zone: ZONE, workerId: w, authorizedKeys: [pub] })),
  );
  await updateState(sim.root, (s) => {
    s.nodes[nodeName] = {
      name: nodeName,
      zone: ZONE,
      acceleratorType: "v6e-16",
      runtimeVersion: "v2-alpha-tpuv6e",
      state: "READY",
      labels: {},
      preemptible: true,
      createTime: Date.now(),
      id: "1234567890123456789",
      hostIds: hosts.map((h) => h.id),
    };
  });
});

afterAll(async () => {
  await sim?.stop();
});

describe("GCE metadata emulator", () => {
  it("is announced to ssh sessions through GCE_METADATA_HOST", () => {
    expect(metadataAddr).toMatch(/^198\.18\.0\.1:\d+$/);
    expect(ssh(hosts[0] as SimHost, "echo $GCE_METADATA_HOST").stdout.trim()).toBe(metadataAddr);
  });

  it("answers each host with its own identity", () => {
    const num = projectNumber(sim.project);
    expect(num).toMatch(/^[1-9]\d{11}$/);
    for (const h of hosts) {
      const r = ssh(
        h,
        [
          md("instance/attributes/agent-worker-number"),
          md("instance/network-interfaces/0/ip"),
          md("instance/network-interfaces/0/access-configs/0/external-ip"),
          md("instance/hostname"),
          md("instance/zone"),
          md("project/project-id"),
          md("instance/attributes/accelerator-type"),
        ].join("; "),
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.split("\n").slice(0, 7)).toEqual([
        String(h.workerId),
        h.internalIp,
        h.externalIp,
        `${h.hostname}.${ZONE}.c.${sim.project}.internal`,
        `projects/${num}/zones/${ZONE}`,
        sim.project,
        "v6e-16",
      ]);
    }
  });

  it("answers with the Metadata-Flavor header and text/plain", () => {
    const r = ssh(
      hosts[1] as SimHost,
      `curl -sSi -H 'Metadata-Flavor: Google' http://$GCE_METADATA_HOST/computeMetadata/v1/instance/attributes/agent-worker-number`,
    );
    expect(r.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(r.stdout).toMatch(/^metadata-flavor: Google\r$/im);
    expect(r.stdout).toMatch(/^content-type: text\/plain\r$/im);
    expect(r.stdout.endsWith("\r\n\r\n1")).toBe(true);
  });

  it("is reachable as metadata.google.internal through the hosts' curl", () => {
    const r = ssh(
      hosts[2] as SimHost,
      "curl -sS -H 'Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number",
    );
    expect(r.stdout, r.stderr).toBe("2");
  });

  // A real VM has no GCE_METADATA_HOST: clients fall back to metadata.google.internal, which the image's
  // /etc/hosts maps to 169.254.169.254 (the host DNATs it to the emulator, still seen from the VM's address).
  it("answers at metadata.google.internal and 169.254.169.254 with GCE_METADATA_HOST unset, by name resolution alone", () => {
    const noEnv = (cmd: string) => ssh(hosts[3] as SimHost, `unset GCE_METADATA_HOST GCE_METADATA_IP; ${cmd}`);
    expect(noEnv("getent hosts metadata.google.internal").stdout).toMatch(/^169\.254\.169\.254\s+metadata\.google\.internal/);
    const hdr = "-H 'Metadata-Flavor: Google'";
    expect(noEnv(`curl -sS ${hdr} http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number`).stdout).toBe(
      "3",
    );
    expect(noEnv(`curl -sS ${hdr} http://169.254.169.254/computeMetadata/v1/instance/name`).stdout).toBe((hosts[3] as SimHost).hostname);
    expect(
      noEnv(
        `wget -qO- --header='Metadata-Flavor: Google' http://metadata.google.internal/computeMetadata/v1/instance/network-interfaces/0/ip`,
      ).stdout,
    ).toBe((hosts[3] as SimHost).internalIp);
    // The fallback tpu-deploy's host probe uses (src/core/remote.ts), with Python's own resolver (no curl shim).
    const py = noEnv(
      `/usr/bin/python3 -c "import os,urllib.request; h=os.environ.get('GCE_METADATA_HOST') or 'metadata.google.internal'; ` +
        `print(urllib.request.urlopen(urllib.request.Request('http://'+h+'/computeMetadata/v1/instance/attributes/agent-worker-number', headers={'Metadata-Flavor':'Google'}), timeout=5).read().decode())"`,
    );
    expect(py.stdout.trim(), py.stderr).toBe("3");
  });

  it("refuses requests without Metadata-Flavor: Google (403), or with X-Forwarded-For", () => {
    const code = (extra: string) =>
      ssh(
        hosts[0] as SimHost,
        `curl -s -o /dev/null -w '%{http_code}' ${extra} http://$GCE_METADATA_HOST/computeMetadata/v1/project/project-id`,
      ).stdout;
    expect(code("")).toBe("403");
    expect(code("-H 'Metadata-Flavor: google-ish'")).toBe("403");
    expect(code("-H 'Metadata-Flavor: Google' -H 'X-Forwarded-For: 1.2.3.4'")).toBe("403");
    expect(code("-H 'Metadata-Flavor: Google'")).toBe("200");
  });

  it("answers 404 for unknown paths", () => {
    const r = ssh(
      hosts[0] as SimHost,
      `curl -s -o /dev/null -w '%{http_code}' -H 'Metadata-Flavor: Google' http://$GCE_METADATA_HOST/computeMetadata/v1/instance/attributes/no-such-attribute`,
    );
    expect(r.stdout).toBe("404");
  });

  it("answers 404 to callers that are not a live VM of the sim", async () => {
    const res = await fetch(`http://${metadataAddr}/computeMetadata/v1/instance/attributes/agent-worker-number`, {
      headers: { "Metadata-Flavor": "Google" },
    });
    expect(res.status).toBe(404);
    expect(res.headers.get("metadata-flavor")).toBe("Google");
  });
});
