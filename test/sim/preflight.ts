// What the simulated cloud needs from this machine, checked once before any host is made: `npm run demo`,
// the end-to-end tests (one vitest global setup) and `npm run bench` all call ensureSimPrerequisites().
// As root on a machine with apt-get, whatever is missing is installed after one line that says what and
// why; otherwise one message lists everything missing and the exact command that installs it.
import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

export interface Requirement {
  /** What is probed: a command name, an absolute path, or a description. */
  what: string;
  /** The Debian package that provides it (none for root). */
  pkg?: string;
  why: string;
}

export interface Probe {
  /** Effective uid; root is needed for network namespaces. */
  uid: number;
  /** Where commands are looked up (PATH plus the sbin directories, which a non-root PATH may lack). */
  pathDirs: string[];
  /** Prefix for the absolute paths probed (sshd, python3): "/" on a real machine. */
  fsRoot: string;
}

export function machineProbe(env: NodeJS.ProcessEnv = process.env): Probe {
  const path = (env.PATH ?? "").split(delimiter).filter((d) => d !== "");
  return { uid: process.getuid?.() ?? -1, pathDirs: [...path, "/usr/local/sbin", "/usr/sbin", "/sbin"], fsRoot: "/" };
}

const COMMANDS: (Requirement & { cmd: string })[] = [
  { cmd: "ip", what: "ip", pkg: "iproute2", why: "network namespaces, veths and bridges for the hosts" },
  { cmd: "unshare", what: "unshare", pkg: "util-linux", why: "each host's own mount namespace (its /home and /tmp)" },
  { cmd: "nsenter", what: "nsenter", pkg: "util-linux", why: "running commands inside a host" },
  { cmd: "setsid", what: "setsid", pkg: "util-linux", why: "SkyPilot's job processes as session leaders" },
  { cmd: "mount", what: "mount", pkg: "mount", why: "bind mounts of each host's home and /tmp" },
  { cmd: "ssh", what: "ssh", pkg: "openssh-client", why: "the fake sky's setup/run over SSH, as SkyPilot does" },
  { cmd: "ssh-keygen", what: "ssh-keygen", pkg: "openssh-client", why: "cluster and host keys" },
  { cmd: "nft", what: "nft", pkg: "nftables", why: "firewalling a port on a host (blocked rendezvous ports)" },
  { cmd: "pkill", what: "pkill", pkg: "procps", why: "ending a failed job's processes on the hosts" },
  { cmd: "useradd", what: "useradd", pkg: "passwd", why: "the gcpuser account of the TPU VMs" },
];

const FILES: (Requirement & { path: string })[] = [
  { path: "/usr/sbin/sshd", what: "/usr/sbin/sshd", pkg: "openssh-server", why: "the SSH server of every simulated TPU host" },
  { path: "/usr/bin/python3", what: "/usr/bin/python3", pkg: "python3", why: "the sglang-jax double and the host tools" },
  // A TPU VM image has curl and wget; the hosts' offline ones (test/sim/host-bin/curl, wget) serve the uv
  // installer themselves and hand every other URL (the metadata server's, in the tests) to these.
  { path: "/usr/bin/curl", what: "/usr/bin/curl", pkg: "curl", why: "the TPU VMs' curl, behind the hosts' offline one" },
  { path: "/usr/bin/wget", what: "/usr/bin/wget", pkg: "wget", why: "the TPU VMs' wget, behind the hosts' offline one" },
];

// Every module the sglang-jax double and the host tools import (test/sim/sgl_jax, test/sim/host-bin).
const PYTHON_MODULES = [
  "argparse",
  "dataclasses",
  "errno",
  "fcntl",
  "http.server",
  "ipaddress",
  "json",
  "queue",
  "signal",
  "socket",
  "struct",
  "threading",
  "traceback",
  "urllib.parse",
  "urllib.request",
  "uuid",
];

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Everything the simulated cloud needs that this machine lacks; empty when all is there. */
export function missingPrerequisites(probe: Probe = machineProbe()): Requirement[] {
  const missing: Requirement[] = [];
  if (probe.uid !== 0) missing.push({ what: "root", why: "the simulated TPU hosts are network namespaces running sshd" });
  for (const c of COMMANDS) {
    if (!probe.pathDirs.some((d) => executable(join(d, c.cmd)))) missing.push(c);
  }
  for (const f of FILES) {
    if (!executable(join(probe.fsRoot, f.path))) missing.push(f);
  }
  const python = join(probe.fsRoot, "/usr/bin/python3");
  if (executable(python)) {
    const r = spawnSync(python, ["-c", `import ${PYTHON_MODULES.join(", ")}`], { encoding: "utf8", timeout: 30_000 });
    if (r.status !== 0) {
      const detail = (r.stderr ?? "").trim().split("\n").at(-1) ?? "";
      missing.push({ what: "python3's standard library", pkg: "python3", why: `the sglang-jax double imports it (${detail})` });
    }
  }
  return missing;
}

export function packagesOf(missing: readonly Requirement[]): string[] {
  return [...new Set(missing.flatMap((m) => (m.pkg ? [m.pkg] : [])))];
}

export function installCommand(packages: readonly string[], asRoot: boolean): string {
  const sudo = asRoot ? "" : "sudo ";
  return `${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${packages.join(" ")}`;
}

/** One message for everything missing, with what to do. */
export function describeMissing(missing: readonly Requirement[], command: string, asRoot: boolean): string {
  const lines = [`${command} needs what this machine lacks for the simulated cloud:`];
  for (const m of missing) lines.push(`  ${m.what}${m.pkg ? ` (package ${m.pkg})` : ""}: ${m.why}`);
  const packages = packagesOf(missing);
  if (missing.some((m) => m.what === "root")) lines.push(`run it as root: sudo ${command}`);
  if (packages.length > 0) lines.push(`install ${packages.length === 1 ? "it" : "them"} with: ${installCommand(packages, asRoot)}`);
  return lines.join("\n");
}

export class PreflightError extends Error {
  constructor(
    message: string,
    readonly missing: Requirement[],
  ) {
    super(message);
    this.name = "PreflightError";
  }
}

export interface EnsureOptions {
  /** How the caller is run, for the messages: "npm run demo", "npm test". */
  command: string;
  probe?: Probe;
  /** Where the one "installing …" line goes. */
  log?: (line: string) => void;
  /** Runs apt-get; tests replace it. */
  apt?: (args: string[]) => { code: number; output: string };
}

function realApt(args: string[]): { code: number; output: string } {
  const r = spawnSync("apt-get", args, {
    encoding: "utf8",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    timeout: 20 * 60_000,
  });
  return { code: r.status ?? 1, output: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

/**
 * Makes sure the simulated cloud can run here: installs what is missing when it can (root + apt-get),
 * or throws one PreflightError naming everything missing and how to get it.
 */
export function ensureSimPrerequisites(opts: EnsureOptions): void {
  const probe = opts.probe ?? machineProbe();
  const missing = missingPrerequisites(probe);
  if (missing.length === 0) return;
  const asRoot = probe.uid === 0;
  const packages = packagesOf(missing);
  const canInstall = asRoot && missing.every((m) => m.pkg !== undefined) && probe.pathDirs.some((d) => executable(join(d, "apt-get")));
  if (!canInstall) throw new PreflightError(describeMissing(missing, opts.command, asRoot), missing);
  (opts.log ?? ((l) => process.stderr.write(`${l}\n`)))(
    `installing ${packages.join(" ")} for the simulated cloud (${missing.map((m) => m.what).join(", ")} missing)`,
  );
  const apt = opts.apt ?? realApt;
  for (const args of [
    ["update", "-qq"],
    ["install", "-y", "-qq", "--no-install-recommends", ...packages],
  ]) {
    const r = apt(args);
    if (r.code !== 0) {
      throw new PreflightError(
        `${describeMissing(missing, opts.command, asRoot)}\napt-get ${args.join(" ")} failed (exit ${r.code}):\n${r.output.trim().split("\n").slice(-10).join("\n")}`,
        missing,
      );
    }
  }
  const still = missingPrerequisites(probe);
  if (still.length > 0) throw new PreflightError(describeMissing(still, opts.command, asRoot), still);
}
