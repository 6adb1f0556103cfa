// SkyPilot's SSH config read the way OpenSSH reads it: `ssh -G` over files in the forms SkyPilot writes
// (test/fixtures/sky-ssh/README.md), through the real ssh client of this machine.
import { cpSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { skyHosts } from "../../src/adapters/sky-ssh.js";
import { OperationError } from "../../src/errors.js";

const home = mkdtempSync(join(tmpdir(), "tpd-skyssh-"));
afterAll(() => rmSync(home, { recursive: true, force: true }));
mkdirSync(join(home, ".sky", "generated"), { recursive: true });
cpSync(join(import.meta.dirname, "..", "fixtures", "sky-ssh"), join(home, ".sky", "generated", "ssh"), { recursive: true });
const env = { PATH: process.env.PATH, HOME: home };

describe("skyHosts: SkyPilot's SSH config through ssh -G", () => {
  it("the plain form: four hosts, head first, with SkyPilot's key under $HOME", async () => {
    const hosts = await skyHosts(home, "sgl-v6e16", env);
    expect(hosts).toEqual([
      {
        alias: "sgl-v6e16",
        index: 0,
        hostName: "34.118.10.11",
        user: "gcpuser",
        port: 22,
        identityFile: `${home}/.sky/generated/ssh-keys/sgl-v6e16.key`,
      },
      {
        alias: "sgl-v6e16-worker1",
        index: 1,
        hostName: "34.118.10.23",
        user: "gcpuser",
        port: 22,
        identityFile: `${home}/.sky/generated/ssh-keys/sgl-v6e16.key`,
      },
      {
        alias: "sgl-v6e16-worker2",
        index: 2,
        hostName: "34.118.10.5",
        user: "gcpuser",
        port: 22,
        identityFile: `${home}/.sky/generated/ssh-keys/sgl-v6e16.key`,
      },
      {
        alias: "sgl-v6e16-worker3",
        index: 3,
        hostName: "35.186.2.7",
        user: "gcpuser",
        port: 22,
        identityFile: `${home}/.sky/generated/ssh-keys/sgl-v6e16.key`,
      },
    ]);
  });

  it("gcp.ssh_proxy_command: every host carries the ProxyCommand, tokens left for the connect", async () => {
    const hosts = await skyHosts(home, "sgl-proxied", env);
    expect(hosts).toHaveLength(4);
    for (const h of hosts) expect(h.proxyCommand).toBe("ssh -W %h:%p -i ~/.ssh/bastion.key bastion@35.0.0.9");
  });

  it("the Docker form: localhost:10022 through the VM", async () => {
    const [h] = await skyHosts(home, "sgl-docker", env);
    expect(h).toMatchObject({ hostName: "localhost", port: 10022, user: "sky" });
    expect(h?.proxyCommand).toMatch(/-W %h:%p gcpuser@34\.118\.10\.11$/);
  });

  it("a cluster SkyPilot wrote no config for: hosts_mismatch with what to run", async () => {
    const err = await skyHosts(home, "nope", env).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OperationError);
    expect((err as OperationError).code).toBe("hosts_mismatch");
    expect((err as OperationError).hint).toContain("sky status nope");
  });

  it("without an ssh client: says to install it", async () => {
    const err = await skyHosts(home, "sgl-v6e16", { ...env, PATH: home }).catch((e: unknown) => e);
    expect((err as OperationError).message).toContain("ssh is not installed");
    expect((err as OperationError).hint).toContain("openssh-client");
  });
});
