// What tpu-deploy reads itself from SkyPilot's SSH config: which hosts it lists. (Each host's settings come
// from `ssh -G`: test/host/sky-ssh.test.ts.)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { clusterAliases, expandProxyCommand, expandTilde, parseSshG } from "../../src/core/ssh-config.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures", "sky-ssh");
const fixture = (name: string) => readFileSync(join(FIXTURES, name), "utf8");

describe("clusterAliases", () => {
  it("lists SkyPilot's head and workers by index", () => {
    expect(clusterAliases(fixture("sgl-v6e16"), "sgl-v6e16")).toEqual({
      ok: true,
      aliases: [
        { alias: "sgl-v6e16", index: 0 },
        { alias: "sgl-v6e16-worker1", index: 1 },
        { alias: "sgl-v6e16-worker2", index: 2 },
        { alias: "sgl-v6e16-worker3", index: 3 },
      ],
    });
  });

  it("sorts by index, ignores patterns, negations, comments and other clusters' hosts", () => {
    const text = "Host c-worker2 other *\nHost c\n  Port 22\nhost=!c-worker9 c-worker1 # a comment c-worker7\nHost c-worker01 c-workerx\n";
    expect(clusterAliases(text, "c")).toEqual({
      ok: true,
      aliases: [
        { alias: "c", index: 0 },
        { alias: "c-worker1", index: 1 },
        { alias: "c-worker2", index: 2 },
      ],
    });
  });

  it("a cluster whose name ends in -workerN is indexed by the given name", () => {
    const r = clusterAliases("Host a-worker1\nHost a-worker1-worker1\n", "a-worker1");
    expect(r).toEqual({
      ok: true,
      aliases: [
        { alias: "a-worker1", index: 0 },
        { alias: "a-worker1-worker1", index: 1 },
      ],
    });
  });

  it.each([
    ["", 'no Host block for "c" or "c-workerN"'],
    ["Host c-worker1\n", 'no Host block for the head "c"'],
    ["Host c\nHost c-worker2\nHost c-worker4\n", 'missing "c-worker1", "c-worker3"'],
  ])("%j is incomplete: %s", (text, why) => {
    const r = clusterAliases(text, "c");
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toContain(why);
  });
});

describe("parseSshG", () => {
  it("takes the first value of each keyword, and no proxy when ssh -G says none", () => {
    const out = "user gcpuser\nhostname 10.0.0.1\nport 2222\nidentityfile ~/a\nidentityfile ~/b\nproxycommand none\n";
    expect(parseSshG(out)).toEqual({
      hostName: "10.0.0.1",
      user: "gcpuser",
      port: 2222,
      identityFile: "~/a",
      proxyCommand: undefined,
      proxyJump: undefined,
    });
  });

  it("keeps a ProxyCommand with its tokens, spaces and all", () => {
    const out = "user u\nhostname h\nport 22\nproxycommand ssh -W %h:%p -o 'X=a b' j@1.2.3.4\n";
    expect(parseSshG(out)?.proxyCommand).toBe("ssh -W %h:%p -o 'X=a b' j@1.2.3.4");
  });

  it("is undefined without hostname, user or a numeric port", () => {
    expect(parseSshG("user u\nport 22\n")).toBeUndefined();
    expect(parseSshG("hostname h\nuser u\nport x\n")).toBeUndefined();
  });
});

describe("expandTilde and expandProxyCommand", () => {
  it("expands ~ against the home SkyPilot wrote the key under", () => {
    expect(expandTilde("~/.sky/k", "/home/me/")).toBe("/home/me/.sky/k");
    expect(expandTilde("~", "/home/me")).toBe("/home/me");
    expect(expandTilde("~other/k", "/home/me")).toBe("~other/k");
    expect(expandTilde("/abs/k", "/home/me")).toBe("/abs/k");
  });

  it("expands %h %p %r %n and %% as OpenSSH does, and nothing else", () => {
    expect(expandProxyCommand("ssh -W %h:%p %r@j # %n %% %x", { host: "10.0.0.1", port: 22, user: "gcpuser", alias: "c-worker1" })).toBe(
      "ssh -W 10.0.0.1:22 gcpuser@j # c-worker1 % %x",
    );
  });
});
