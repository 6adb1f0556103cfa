import { describe, expect, it } from "vitest";
import { clusterHosts, expandTilde, parseSshConfig, type SshHostEntry } from "../../src/core/ssh-config.js";

// Verbatim from skypilot.md §5: what SSHConfigHelper.add_cluster writes for a v6e-16.
const SKY_V6E16 = `# Added by sky (use \`sky stop/down sgl-v6e16\` to remove)
Host sgl-v6e16
  HostName 34.118.10.11
  User gcpuser
  IdentityFile ~/.sky/generated/ssh-keys/sgl-v6e16.key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile=/dev/null
  GlobalKnownHostsFile=/dev/null
  Port 22
  SetEnv SKY_CLUSTER_NAME=sgl-v6e16-2ea485ef

# Added by sky (use \`sky stop/down sgl-v6e16\` to remove)
Host sgl-v6e16-worker1
  HostName 34.118.10.23
  User gcpuser
  IdentityFile ~/.sky/generated/ssh-keys/sgl-v6e16.key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile=/dev/null
  GlobalKnownHostsFile=/dev/null
  Port 22
  SetEnv SKY_CLUSTER_NAME=sgl-v6e16-2ea485ef

# Added by sky (use \`sky stop/down sgl-v6e16\` to remove)
Host sgl-v6e16-worker2
  HostName 34.118.10.5
  User gcpuser
  IdentityFile ~/.sky/generated/ssh-keys/sgl-v6e16.key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile=/dev/null
  GlobalKnownHostsFile=/dev/null
  Port 22
  SetEnv SKY_CLUSTER_NAME=sgl-v6e16-2ea485ef

# Added by sky (use \`sky stop/down sgl-v6e16\` to remove)
Host sgl-v6e16-worker3
  HostName 35.186.2.7
  User gcpuser
  IdentityFile ~/.sky/generated/ssh-keys/sgl-v6e16.key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile=/dev/null
  GlobalKnownHostsFile=/dev/null
  Port 22
  SetEnv SKY_CLUSTER_NAME=sgl-v6e16-2ea485ef

`;

const KEY = "~/.sky/generated/ssh-keys/sgl-v6e16.key";

function entries(text: string, cluster = "c"): SshHostEntry[] {
  const r = parseSshConfig(text, cluster);
  if (r.kind !== "ok") throw new Error(`expected ok, got ${JSON.stringify(r.problems)}`);
  return r.entries;
}

function block(alias: string, ip: string, extra = ""): string {
  return `Host ${alias}\n  HostName ${ip}\n  User gcpuser\n  IdentityFile /k\n${extra}\n`;
}

describe("parseSshConfig", () => {
  it("reads SkyPilot's own file into head + workers in file order", () => {
    expect(entries(SKY_V6E16, "sgl-v6e16")).toEqual([
      { alias: "sgl-v6e16", hostName: "34.118.10.11", user: "gcpuser", port: 22, identityFile: KEY, index: 0 },
      { alias: "sgl-v6e16-worker1", hostName: "34.118.10.23", user: "gcpuser", port: 22, identityFile: KEY, index: 1 },
      { alias: "sgl-v6e16-worker2", hostName: "34.118.10.5", user: "gcpuser", port: 22, identityFile: KEY, index: 2 },
      { alias: "sgl-v6e16-worker3", hostName: "35.186.2.7", user: "gcpuser", port: 22, identityFile: KEY, index: 3 },
    ]);
  });

  it.each([
    ["case-insensitive keywords", "HOST c\n  hostname 10.0.0.1\n  USER u\n  identityFILE /k\n  pOrT 2222\n"],
    ["Key=value", "Host=c\nHostName=10.0.0.1\nUser=u\nIdentityFile=/k\nPort=2222\n"],
    ["Key = value with spaces around =", "Host = c\nHostName = 10.0.0.1\nUser\t=\tu\nIdentityFile = /k\nPort = 2222\n"],
    ["tabs, CRLF and trailing spaces", "Host\tc\r\n\tHostName\t10.0.0.1  \r\n\tUser u\r\n\tIdentityFile /k\r\n\tPort 2222\r\n"],
    ["double-quoted values", 'Host "c"\n  HostName "10.0.0.1"\n  User "u"\n  IdentityFile "/k"\n  Port "2222"\n'],
    ["single-quoted values", "Host 'c'\n  HostName '10.0.0.1'\n  User 'u'\n  IdentityFile '/k'\n  Port '2222'\n"],
    ["trailing comments", "Host c # head\n  HostName 10.0.0.1 # ext ip\n  User u\n  IdentityFile /k #key\n  Port 2222\n"],
    [
      "comments and blank lines everywhere",
      "\n# top\n\n   # indented\nHost c\n\n  # inside\n  HostName 10.0.0.1\n  User u\n\n  IdentityFile /k\n  Port 2222\n\n",
    ],
  ])("accepts %s", (_name, text) => {
    expect(entries(text)).toEqual([{ alias: "c", hostName: "10.0.0.1", user: "u", port: 2222, identityFile: "/k", index: 0 }]);
  });

  it("keeps spaces and # inside quotes, and backslash escapes", () => {
    const [e] = entries('Host c\n  HostName h\n  User u\n  IdentityFile "/home/a b/#k"\n');
    expect(e?.identityFile).toBe("/home/a b/#k");
    const [f] = entries('Host c\n  HostName h\n  User u\n  IdentityFile /home/a\\ b/k\\"q\n');
    expect(f?.identityFile).toBe('/home/a b/k"q');
    const [g] = entries("Host c\n  HostName h\n  IdentityFile /x#y\n");
    expect(g?.identityFile).toBe("/x#y");
  });

  it("defaults Port to 22, HostName to the alias, User and IdentityFile to null", () => {
    expect(entries("Host c\n")).toEqual([{ alias: "c", hostName: "c", user: null, port: 22, identityFile: null, index: 0 }]);
  });

  it("takes the first value of a keyword within a block", () => {
    const [e] = entries(
      "Host c\n  HostName 1.1.1.1\n  HostName 2.2.2.2\n  Port 2200\n  Port 2300\n  User a\n  User b\n  IdentityFile /k1\n  IdentityFile /k2\n",
    );
    expect(e).toMatchObject({ hostName: "1.1.1.1", port: 2200, user: "a", identityFile: "/k1" });
  });

  it("applies lines before the first Host and wildcard blocks, first match winning across blocks", () => {
    const text =
      "User early\nHost c c-worker1\n  HostName 1.1.1.1\nHost c-worker1\n  HostName 9.9.9.9\n  User late\nHost c-*\n  Port 2222\nHost * !c-worker1\n  IdentityFile /star\n";
    expect(entries(text)).toEqual([
      { alias: "c", hostName: "1.1.1.1", user: "early", port: 22, identityFile: "/star", index: 0 },
      { alias: "c-worker1", hostName: "1.1.1.1", user: "early", port: 2222, identityFile: null, index: 1 },
    ]);
  });

  it("matches ? and leaves Host patterns case-sensitive as OpenSSH does", () => {
    const text = "Host c-worker?\n  Port 2022\nHost C\n  Port 9999\nHost c c-worker1\n";
    expect(entries(text).map((e) => [e.alias, e.port])).toEqual([
      ["c", 22],
      ["c-worker1", 2022],
    ]);
  });

  it("ignores aliases of other clusters and names that are not SkyPilot's", () => {
    const text = `${block("c-2", "1.1.1.1")}${block("cc", "1.1.1.2")}${block("c-worker0", "1.1.1.3")}${block("c-worker01", "1.1.1.4")}${block("c-worker", "1.1.1.5")}${block("c-worker2", "1.1.1.6")}${block("c", "1.1.1.7")}`;
    expect(entries(text).map((e) => [e.alias, e.index])).toEqual([
      ["c-worker2", 2],
      ["c", 0],
    ]);
  });

  it("indexes a cluster whose own name ends in -workerN by the given cluster name", () => {
    const text = `${block("a-worker1", "1.1.1.1")}${block("a-worker1-worker1", "1.1.1.2")}`;
    expect(entries(text, "a-worker1").map((e) => [e.alias, e.index])).toEqual([
      ["a-worker1", 0],
      ["a-worker1-worker1", 1],
    ]);
  });

  it.each([
    ["an unclosed quote", 'Host c\n  HostName "1.1.1.1\n', 2, "invalid quotes"],
    ["a keyword without argument", "Host c\n  HostName\n", 2, 'no argument after keyword "hostname"'],
    ["an empty quoted argument", 'Host c\n  User ""\n', 2, 'missing argument after "user"'],
    ["a port that is not a number", "Host c\n  Port ssh\n", 2, 'bad port number "ssh"'],
    ["port 0", "Host c\n  Port 0\n", 2, 'bad port number "0"'],
    ["port 65536", "Host c\n  Port 65536\n", 2, 'bad port number "65536"'],
    ["two HostNames on one line", "Host c\n  HostName 1.1.1.1 2.2.2.2\n", 2, 'garbage at end of line after "hostname 1.1.1.1"'],
    ["Match", "Host c\nMatch host c\n  User x\n", 2, '"Match" is not supported'],
    ["Include", "Include other\nHost c\n", 1, '"Include" is not supported'],
    ["a double =", "Host c\n  Port==22\n", 2, 'bad port number "=22"'],
  ])("rejects %s with its line number, as OpenSSH refuses the file", (_name, text, line, message) => {
    const r = parseSshConfig(text, "c");
    expect(r.kind).toBe("invalid");
    if (r.kind !== "invalid") return;
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]?.line).toBe(line);
    expect(r.problems[0]?.message).toContain(message);
  });

  it("reports every bad line at once", () => {
    const r = parseSshConfig("Host c\n  Port x\n  User\n  HostName ok\n  Port 70000\n", "c");
    expect(r.kind === "invalid" && r.problems.map((p) => p.line)).toEqual([2, 3, 5]);
  });

  it("validates lines even in blocks that match no alias of the cluster", () => {
    expect(parseSshConfig("Host other\n  Port nope\nHost c\n", "c").kind).toBe("invalid");
  });

  it("ignores keywords it does not need, with any arguments", () => {
    expect(entries("Host c\n  SetEnv A=1 B=2\n  ProxyCommand ssh -W %h:%p jump\n  Bogus x\n")).toHaveLength(1);
  });

  it("gives an empty list for an empty file", () => {
    expect(entries("")).toEqual([]);
  });
});

describe("expandTilde", () => {
  it.each([
    ["~/.sky/generated/ssh-keys/c.key", "/home/me", "/home/me/.sky/generated/ssh-keys/c.key"],
    ["~/k", "/home/me/", "/home/me/k"],
    ["~", "/home/me", "/home/me"],
    ["/abs/k", "/home/me", "/abs/k"],
    ["~other/k", "/home/me", "~other/k"],
    ["rel/~/k", "/home/me", "rel/~/k"],
  ])("%s with HOME=%s → %s", (path, home, expected) => {
    expect(expandTilde(path, home)).toBe(expected);
  });
});

describe("clusterHosts", () => {
  const host = (alias: string, index: number, over: Partial<SshHostEntry> = {}): SshHostEntry => ({
    alias,
    hostName: `10.0.0.${index + 1}`,
    user: "gcpuser",
    port: 22,
    identityFile: "/k",
    index,
    ...over,
  });

  it("returns head and workers sorted by index", () => {
    const r = clusterHosts([host("c-worker2", 2), host("c", 0), host("c-worker1", 1)], "c");
    expect(r.kind === "ok" && r.hosts.map((h) => h.alias)).toEqual(["c", "c-worker1", "c-worker2"]);
  });

  it("sorts SkyPilot's file and ignores other clusters' entries", () => {
    const parsed = entries(`${block("c-worker1", "2.2.2.2")}${block("c", "1.1.1.1")}`);
    const r = clusterHosts([...parsed, host("d", 0)], "c");
    expect(r).toEqual({
      kind: "ok",
      hosts: [
        { alias: "c", hostName: "1.1.1.1", user: "gcpuser", port: 22, identityFile: "/k", index: 0 },
        { alias: "c-worker1", hostName: "2.2.2.2", user: "gcpuser", port: 22, identityFile: "/k", index: 1 },
      ],
    });
  });

  it("accepts a single-host cluster", () => {
    expect(clusterHosts([host("c", 0)], "c").kind).toBe("ok");
  });

  it.each([
    ["no entries", [], [{ kind: "no-hosts" }], 'no Host block for "c" or "c-workerN"'],
    ["a missing head", [host("c-worker1", 1)], [{ kind: "no-head" }], 'no Host block for the head "c"'],
    [
      "gaps",
      [host("c", 0), host("c-worker2", 2), host("c-worker5", 5)],
      [{ kind: "gap", missing: [1, 3, 4] }],
      'missing "c-worker1", "c-worker3", "c-worker4"',
    ],
    [
      "a duplicate index",
      [host("c", 0), host("c", 0, { hostName: "x" })],
      [{ kind: "duplicate", index: 0 }],
      "more than one entry for host index 0",
    ],
    ["a host without User", [host("c", 0, { user: null })], [{ kind: "missing-field", alias: "c", field: "User" }], '"c" has no User'],
    [
      "a host without IdentityFile",
      [host("c", 0), host("c-worker1", 1, { identityFile: null })],
      [{ kind: "missing-field", alias: "c-worker1", field: "IdentityFile" }],
      '"c-worker1" has no IdentityFile',
    ],
  ])("errors clearly on %s", (_name, list, problems, text) => {
    const r = clusterHosts(list, "c");
    expect(r.kind).toBe("error");
    if (r.kind !== "error") return;
    expect(r.problems).toEqual(problems);
    expect(r.message).toContain('SSH config of cluster "c"');
    expect(r.message).toContain(text);
  });

  it("collects every problem at once", () => {
    const r = clusterHosts([host("c-worker2", 2, { user: null })], "c");
    expect(r.kind === "error" && r.problems.map((p) => p.kind)).toEqual(["no-head", "gap", "missing-field"]);
  });

  it("takes the index from the alias, not from what the caller put in the entry", () => {
    const r = clusterHosts([host("c-worker1", 3), host("c", 0)], "c");
    expect(r.kind === "ok" && r.hosts.map((h) => [h.alias, h.index])).toEqual([
      ["c", 0],
      ["c-worker1", 1],
    ]);
  });
});
