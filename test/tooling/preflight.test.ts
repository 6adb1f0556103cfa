// The simulated cloud's preflight, against probes that find nothing (an empty directory for PATH and
// for the file system) and against a stand-in apt-get: what a user sees on a machine that lacks things.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ensureSimPrerequisites, missingPrerequisites, type Probe, PreflightError } from "../sim/preflight.js";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function emptyDir(): string {
  const d = mkdtempSync(join(tmpdir(), "tpd-preflight-"));
  dirs.push(d);
  return d;
}

function thrown(f: () => void): PreflightError {
  try {
    f();
  } catch (err) {
    if (err instanceof PreflightError) return err;
    throw err;
  }
  throw new Error("no PreflightError");
}

const ALL_PACKAGES = [
  "iproute2",
  "util-linux",
  "mount",
  "openssh-client",
  "nftables",
  "procps",
  "passwd",
  "openssh-server",
  "python3",
  "curl",
  "wget",
];

describe("the simulated cloud's preflight", () => {
  it("as a user whose probes find nothing: one message naming root, every missing piece and the command that installs them", () => {
    const empty = emptyDir();
    const probe: Probe = { uid: 1000, pathDirs: [empty], fsRoot: empty };
    const calls: string[][] = [];
    const e = thrown(() =>
      ensureSimPrerequisites({
        command: "npm run demo",
        probe,
        apt: (a) => {
          calls.push(a);
          return { code: 0, output: "" };
        },
      }),
    );
    expect(calls).toEqual([]);
    const lines = e.message.split("\n");
    expect(lines[0]).toBe("npm run demo needs what this machine lacks for the simulated cloud:");
    expect(e.message).toContain("  root: the simulated TPU hosts are network namespaces running sshd");
    expect(e.message).toContain("  /usr/sbin/sshd (package openssh-server): the SSH server of every simulated TPU host");
    expect(e.message).toContain("  nft (package nftables):");
    expect(e.message).toContain("run it as root: sudo npm run demo");
    expect(lines.at(-1)).toBe(
      `install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${ALL_PACKAGES.join(" ")}`,
    );
    expect(e.missing.map((m) => m.what)).toContain("/usr/bin/python3");
  });

  it("as root with apt-get: says what it installs and why in one line, installs exactly what is missing, then goes on", () => {
    const root = emptyDir();
    const bin = join(root, "bin");
    mkdirSync(bin);
    const exe = (path: string) => {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, "#!/bin/sh\nexit 0\n");
      chmodSync(path, 0o755);
    };
    // Everything but sshd and nft is there.
    for (const c of ["apt-get", "ip", "unshare", "nsenter", "setsid", "mount", "ssh", "ssh-keygen", "pkill", "useradd"]) exe(join(bin, c));
    mkdirSync(join(root, "usr", "bin"), { recursive: true });
    writeFileSync(join(root, "usr", "bin", "python3"), '#!/bin/sh\nexec /usr/bin/python3 "$@"\n', { mode: 0o755 });
    for (const tool of ["curl", "wget"]) exe(join(root, "usr", "bin", tool));
    const probe: Probe = { uid: 0, pathDirs: [bin], fsRoot: root };
    expect(missingPrerequisites(probe).map((m) => m.what)).toEqual(["nft", "/usr/sbin/sshd"]);
    const logged: string[] = [];
    const calls: string[][] = [];
    ensureSimPrerequisites({
      command: "npm test",
      probe,
      log: (l) => logged.push(l),
      apt: (args) => {
        calls.push(args);
        if (args[0] === "install") {
          exe(join(bin, "nft"));
          exe(join(root, "usr", "sbin", "sshd"));
        }
        return { code: 0, output: "" };
      },
    });
    expect(logged).toEqual(["installing nftables openssh-server for the simulated cloud (nft, /usr/sbin/sshd missing)"]);
    expect(calls).toEqual([
      ["update", "-qq"],
      ["install", "-y", "-qq", "--no-install-recommends", "nftables", "openssh-server"],
    ]);
  });

  it("as root, when apt-get fails: the same message, plus apt-get's own last lines", () => {
    const empty = emptyDir();
    const bin = join(empty, "bin");
    mkdirSync(bin);
    writeFileSync(join(bin, "apt-get"), "#!/bin/sh\n", { mode: 0o755 });
    const probe: Probe = { uid: 0, pathDirs: [bin], fsRoot: empty };
    const e = thrown(() =>
      ensureSimPrerequisites({
        command: "npm test",
        probe,
        log: () => undefined,
        apt: () => ({ code: 100, output: "E: Unable to locate package nftables" }),
      }),
    );
    expect(e.message).toContain("apt-get update -qq failed (exit 100):\nE: Unable to locate package nftables");
    expect(e.message).toContain("install them with: apt-get update && apt-get install -y --no-install-recommends");
    expect(e.message).not.toContain("sudo");
  });

  it("on this machine, as the test runs, nothing is missing (the host and e2e projects' global setup saw to it)", () => {
    if (process.getuid?.() !== 0) return expect(missingPrerequisites().map((m) => m.what)).toContain("root");
    expect(missingPrerequisites()).toEqual([]);
  });
});
