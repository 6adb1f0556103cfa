// Simulated TPU VMs: one network namespace per host with a real OpenSSH sshd, on two shared bridges.
// The bridges, the unreachable route and the gcpuser account are machine-wide (several sims may run at
// once, e.g. a test and the demo), so changes to them happen under MACHINE_LOCK; everything else is named
// after the sim id so that sims never touch each other's hosts.
import { spawn } from "node:child_process";
import { createHash, randomInt } from "node:crypto";
import { closeSync, openSync, readdirSync, readFileSync } from "node:fs";
import { appendFile, chmod, chown, cp, mkdir, readdir, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { basename, join } from "node:path";
import { pidAlive, readSimConfig, readState, updateState, withFileLock, type SimHost, type SimHostKey, type SimState } from "./state.js";

export const EXT_BRIDGE = "tpdext";
export const INT_BRIDGE = "tpdint";
export const EXT_GATEWAY = "198.18.0.1";
export const INTERNAL_RANGE = "198.19.0.0/16";
export const SIM_ROOT_PREFIX = "/tmp/tpd-sim-";
export const MACHINE_LOCK = "/tmp/tpd-sim.lock";
export const GCPUSER = "gcpuser";
export const GCPUSER_HOME = "/home/gcpuser";
// The GCE metadata server's link-local address; inside each host it is DNATed to the emulator.
export const METADATA_IP = "169.254.169.254";

const NETNS_DIR = "/run/netns";
const SIM_ID_RE = /^[A-Za-z0-9]{6}$/;
const NETNS_RE = /^tpd-([A-Za-z0-9]{6})-(h\d+)$/;
const LINK_RE = /^tpd[xi]([A-Za-z0-9]{6})\d+$/;
const SSHD_START_TIMEOUT_MS = 20_000;
// What the guest agent generates at first boot, in its order: host_key_types defaults to "ecdsa,ed25519,rsa"
// (GoogleCloudPlatform/guest-agent google_guest_agent/instance_setup.go generateSSHKeys).
const HOST_KEY_TYPES = ["ecdsa", "ed25519", "rsa"] as const;
// A sim dir without sim.json is one being created right now (startSim writes it right after mkdtemp).
const UNBORN_GRACE_MS = 60_000;

export interface HostSpec {
  cluster: string;
  nodeName: string | null;
  zone: string;
  workerId: number;
  hostname?: string;
  authorizedKeys?: string[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export function simIdOfRoot(root: string): string {
  return basename(root).slice(basename(SIM_ROOT_PREFIX).length);
}

export function netnsName(simId: string, hostId: string): string {
  return `tpd-${simId}-${hostId}`;
}

// Root-side veth names must fit IFNAMSIZ (15): "tpdx" + 6-char sim id + host number.
export function vethNames(simId: string, hostId: string): { ext: string; int: string } {
  const n = hostId.replace(/^h/, "");
  return { ext: `tpdx${simId}${n}`, int: `tpdi${simId}${n}` };
}

export function hostDir(root: string, hostId: string): string {
  return join(root, "hosts", hostId);
}

/** The host's own sshd host keys (private; `.pub` beside each), one per type the guest agent makes. */
export function hostKeyFiles(root: string, hostId: string): string[] {
  return HOST_KEY_TYPES.map((t) => join(hostDir(root, hostId), `ssh_host_${t}_key`));
}

export function hostPath(root: string): string {
  return `${join(root, "host-bin")}:/usr/local/bin:/usr/bin:/bin`;
}

export async function ensureNetwork(simId: string): Promise<void> {
  if (!SIM_ID_RE.test(simId)) throw new Error(`bad sim id ${JSON.stringify(simId)}`);
  await withFileLock(MACHINE_LOCK, async () => {
    const cmds: string[] = [];
    if (!(await exists(`/sys/class/net/${EXT_BRIDGE}`))) cmds.push(`link add ${EXT_BRIDGE} type bridge`);
    if (!(await exists(`/sys/class/net/${INT_BRIDGE}`))) cmds.push(`link add ${INT_BRIDGE} type bridge`);
    cmds.push(
      `addr replace ${EXT_GATEWAY}/16 dev ${EXT_BRIDGE}`,
      `link set ${EXT_BRIDGE} up`,
      `link set ${INT_BRIDGE} up`,
      // As on GCP: the user's machine has no route into the VPC's internal range.
      `route replace unreachable ${INTERNAL_RANGE}`,
    );
    await ipBatch(cmds);
    for (const br of [EXT_BRIDGE, INT_BRIDGE]) {
      await writeFile(`/proc/sys/net/ipv6/conf/${br}/disable_ipv6`, "1").catch(() => undefined);
    }
    await roomForNeighbours();
  });
}

// The kernel's ARP table is one for every network namespace, and its default hard limit (gc_thresh3 = 1024
// entries) is what one real machine needs. A simulated 64-host slice whose hosts all talk to each other (the
// libtpu port check: 64 × 63 pairs) needs ~4,000: past the limit the kernel logs "neighbor table overflow",
// drops the first SYN to a host it cannot resolve and every such connection waits out a retransmit, something
// no real slice (one kernel per host) has. The limits are only raised, never lowered; best effort.
const NEIGH_LIMITS: [string, number][] = [
  ["gc_thresh1", 8192],
  ["gc_thresh2", 16384],
  ["gc_thresh3", 32768],
];

async function roomForNeighbours(): Promise<void> {
  for (const [key, want] of NEIGH_LIMITS) {
    const path = `/proc/sys/net/ipv4/neigh/default/${key}`;
    const now = Number((await readFile(path, "utf8").catch(() => "")).trim());
    if (Number.isFinite(now) && now < want) await writeFile(path, String(want)).catch(() => undefined);
  }
}

// gcpuser with a usable (not locked) password field so key-only sshd without PAM accepts it.
export async function ensureGcpUser(): Promise<{ uid: number; gid: number }> {
  return await withFileLock(MACHINE_LOCK, async () => {
    let pw = await run("getent", ["passwd", GCPUSER]);
    if (pw.code !== 0) {
      await must("useradd", ["-M", "-U", "-d", GCPUSER_HOME, "-s", "/bin/bash", "-p", "*", GCPUSER]);
      pw = await must("getent", ["passwd", GCPUSER]);
    }
    const shadow = await run("getent", ["shadow", GCPUSER]);
    if ((shadow.stdout.split(":")[1] ?? "").startsWith("!")) await must("usermod", ["-p", "*", GCPUSER]);
    const fields = pw.stdout.trim().split(":");
    const uid = Number(fields[2]);
    const gid = Number(fields[3]);
    await mkdir(GCPUSER_HOME, { recursive: true });
    await chown(GCPUSER_HOME, uid, gid);
    await mkdir("/run/sshd", { recursive: true, mode: 0o755 });
    return { uid, gid };
  });
}

// Fresh host keys for one host, as a VM gets them at first boot (each VM its own). Returns the public keys.
async function generateHostKeys(root: string, hostId: string, hostname: string): Promise<SimHostKey[]> {
  const files = hostKeyFiles(root, hostId);
  return await Promise.all(
    HOST_KEY_TYPES.map(async (t, i) => {
      const file = files[i] ?? "";
      await rm(file, { force: true });
      await rm(`${file}.pub`, { force: true });
      // RSA at 2048 bits, not ssh-keygen's 3072: half the CPU per host on a shared 2-core machine, and the
      // size matters to nothing the sim checks.
      const bits = t === "rsa" ? ["-b", "2048"] : [];
      await must("ssh-keygen", ["-q", "-t", t, ...bits, "-N", "", "-C", `root@${hostname}`, "-f", file]);
      const [type, key] = (await readFile(`${file}.pub`, "utf8")).trim().split(/\s+/);
      if (!type || !key) throw new Error(`ssh-keygen wrote no public key to ${file}.pub`);
      return { type, key };
    }),
  );
}

// Creates the hosts, records them in state.json (alive once their sshd accepts TCP) and returns them.
// Do not call from inside updateState (the state lock is not re-entrant).
export async function createHosts(root: string, specs: HostSpec[]): Promise<SimHost[]> {
  if (specs.length === 0) return [];
  const cfg = await readSimConfig(root);
  const user = await ensureGcpUser();
  const hosts = await allocateHosts(root, cfg.id, specs);
  const keys = new Map<string, SimHostKey[]>();
  try {
    await Promise.all(
      hosts.map(async (h, i) => {
        await prepareHostDir(root, h, specs[i]?.authorizedKeys ?? [], user, cfg.metadataAddr, cfg.project);
        keys.set(h.id, await generateHostKeys(root, h.id, h.hostname));
      }),
    );
    await ipBatch(
      hosts.flatMap((h) => {
        const v = vethNames(cfg.id, h.id);
        return [
          `netns add ${h.netns}`,
          `link add ${v.ext} type veth peer name ext0 netns ${h.netns}`,
          `link add ${v.int} type veth peer name ens4 netns ${h.netns}`,
          `link set ${v.ext} master ${EXT_BRIDGE} up`,
          `link set ${v.int} master ${INT_BRIDGE} up`,
        ];
      }),
    );
    const deadline = Date.now() + SSHD_START_TIMEOUT_MS;
    await Promise.all(hosts.map((h) => startSshd(root, h, deadline, cfg.metadataAddr)));
  } catch (e) {
    await killHosts(
      root,
      hosts.map((h) => h.id),
    ).catch(() => undefined);
    throw e;
  }
  const bootedAt = Date.now();
  const ids = new Set(hosts.map((h) => h.id));
  await updateState(root, (s) => {
    for (const id of ids) {
      const h = s.hosts[id];
      if (!h) continue;
      h.alive = true;
      h.hostKeys = keys.get(id) ?? [];
      h.bootedAt = bootedAt;
    }
  });
  return hosts.map((h) => ({ ...h, alive: true, hostKeys: keys.get(h.id) ?? [], bootedAt }));
}

/**
 * Gives a running host new host keys and makes its sshd use them (SIGHUP: sshd re-executes itself and
 * reads its keys again), as an impostor at the host's address, or a reinstalled machine, would look.
 * The TPU API keeps showing the keys published at first boot, unless `publish` (a guest agent that ran
 * its first-boot step again). Resolves once sshd offers the new ed25519 key.
 */
export async function replaceHostKeys(root: string, hostId: string, opts: { publish?: boolean } = {}): Promise<SimHostKey[]> {
  const h = (await readState(root)).hosts[hostId];
  if (!h?.alive) throw new Error(`replaceHostKeys: host ${hostId} is not running`);
  const pid = await sshdPid(root, hostId, h.netns);
  if (pid === null) throw new Error(`replaceHostKeys: no sshd on host ${hostId}`);
  const keys = await generateHostKeys(root, hostId, h.hostname);
  const ed25519 = keys.find((k) => k.type === "ssh-ed25519")?.key ?? "";
  process.kill(pid, "SIGHUP");
  const deadline = Date.now() + SSHD_START_TIMEOUT_MS;
  for (;;) {
    const r = await run("ssh-keyscan", ["-T", "2", "-t", "ed25519", h.externalIp], undefined, 5_000);
    if (r.stdout.includes(ed25519)) break;
    if (Date.now() > deadline) throw new Error(`sshd of host ${hostId} did not take its new host keys: ${r.stderr.trim()}`);
    await sleep(50);
  }
  if (opts.publish) {
    await updateState(root, (s) => {
      const x = s.hosts[hostId];
      if (x) x.hostKeys = keys;
    });
  }
  return keys;
}

export async function authorizeKey(root: string, hostId: string, pubkey: string): Promise<void> {
  const file = join(hostDir(root, hostId), "authorized_keys");
  const line = pubkey.trim();
  const current = await readFile(file, "utf8").catch(() => "");
  if (current.split("\n").some((l) => l.trim() === line)) return;
  await appendFile(file, (current === "" || current.endsWith("\n") ? "" : "\n") + line + "\n", { mode: 0o644 });
}

export async function killHost(root: string, hostId: string): Promise<void> {
  await killHosts(root, [hostId]);
}

// Kills every process in the hosts' namespaces, deletes namespaces and veths, marks the hosts dead.
export async function killHosts(root: string, hostIds: string[]): Promise<void> {
  if (hostIds.length === 0) return;
  const simId = (await readSimConfig(root)).id;
  await destroyNamespaces(
    hostIds.map((id) => netnsName(simId, id)),
    hostIds.flatMap((id) => Object.values(vethNames(simId, id))),
  );
  await updateState(root, (s) => {
    for (const id of hostIds) {
      const h = s.hosts[id];
      if (h) h.alive = false;
    }
  });
}

// Drops inbound TCP to `port` that arrives from outside the host (other hosts, the user's machine);
// the host's own loopback traffic still gets through, like a GCP firewall rule.
export async function blockPort(root: string, hostId: string, port: number): Promise<void> {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`bad port ${port}`);
  const ns = netnsName(simIdOfRoot(root), hostId);
  const rules = [
    "add table inet tpd_sim",
    "add chain inet tpd_sim input { type filter hook input priority 0; policy accept; }",
    `add rule inet tpd_sim input iifname != "lo" tcp dport ${port} drop`,
    "",
  ].join("\n");
  await must("ip", ["netns", "exec", ns, "nft", "-f", "-"], rules);
}

// Runs `cmd` with /bin/sh as root inside the host's network, mount and UTS namespaces, and under sshd's root
// directory and working directory (-r -w): entering a mount namespace resets both to the namespace's, which
// escapes a chroot.
export async function execOnHost(root: string, hostId: string, cmd: string, timeoutMs = 60_000): Promise<RunResult> {
  const ns = netnsName(simIdOfRoot(root), hostId);
  const pid = await sshdPid(root, hostId, ns);
  if (pid === null) return { stdout: "", stderr: `host ${hostId} is not running\n`, code: 255 };
  return await run("nsenter", ["-t", String(pid), "-n", "-m", "-u", "-r", "-w", "--", "/bin/sh", "-c", cmd], undefined, timeoutMs, {
    PATH: `${hostPath(root)}:/usr/sbin:/sbin`,
    HOME: "/root",
    TPD_SIM_ROOT: root,
  });
}

// Removes namespaces, veths and dirs of sims whose owner process is gone, and the shared bridges and
// route when no sim is left.
export async function cleanupLeftovers(): Promise<void> {
  await withFileLock(MACHINE_LOCK, async () => {
    const live = await liveSimIds();
    const { netns, links } = await simNetObjects((id) => !live.has(id));
    await destroyNamespaces(netns, links);
    for (const dir of await simDirs()) {
      if (live.has(simIdOfRoot(dir))) continue;
      killProcessesOfSim(dir);
      await rm(dir, { recursive: true, force: true });
    }
    if (live.size === 0) await removeSharedNetwork();
  });
}

// Everything of one sim on the network side (used by Sim.stop); the shared bridges go too when it was the last sim.
export async function teardownSimNetwork(simId: string): Promise<void> {
  await withFileLock(MACHINE_LOCK, async () => {
    const { netns, links } = await simNetObjects((id) => id === simId);
    await destroyNamespaces(netns, links);
    const live = await liveSimIds();
    live.delete(simId);
    if (live.size === 0) await removeSharedNetwork();
  });
}

// Processes that run on behalf of this sim outside the hosts (fake sky and its request workers, ssh
// clients and other children of the product) carry TPD_SIM_ROOT=<root> in their environment.
export function killProcessesOfSim(root: string): void {
  const needle = Buffer.from(`TPD_SIM_ROOT=${root}\0`);
  const spare = new Set([process.pid, process.ppid]);
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (spare.has(pid)) continue;
    try {
      if (readFileSync(`/proc/${e}/environ`).includes(needle)) process.kill(pid, "SIGKILL");
    } catch {
      // gone, or a kernel thread
    }
  }
}

async function removeSharedNetwork(): Promise<void> {
  await ipBatch([`route del unreachable ${INTERNAL_RANGE}`, `link del ${EXT_BRIDGE}`, `link del ${INT_BRIDGE}`], true);
}

async function simDirs(): Promise<string[]> {
  const prefix = basename(SIM_ROOT_PREFIX);
  const names = await readdir("/tmp").catch(() => [] as string[]);
  const dirs: string[] = [];
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const st = await stat(join("/tmp", n)).catch(() => null);
    if (st?.isDirectory()) dirs.push(join("/tmp", n));
  }
  return dirs;
}

async function liveSimIds(): Promise<Set<string>> {
  const live = new Set<string>();
  for (const dir of await simDirs()) {
    const id = simIdOfRoot(dir);
    try {
      const cfg = await readSimConfig(dir);
      if (pidAlive(cfg.createdBy)) live.add(id);
    } catch {
      const st = await stat(dir).catch(() => null);
      if (st && Date.now() - st.mtimeMs < UNBORN_GRACE_MS) live.add(id);
    }
  }
  return live;
}

async function simNetObjects(pick: (simId: string) => boolean): Promise<{ netns: string[]; links: string[] }> {
  const netns = (await readdir(NETNS_DIR).catch(() => [] as string[])).filter((n) => {
    const m = NETNS_RE.exec(n);
    return m?.[1] !== undefined && pick(m[1]);
  });
  const links = (await readdir("/sys/class/net").catch(() => [] as string[])).filter((n) => {
    const m = LINK_RE.exec(n);
    return m?.[1] !== undefined && pick(m[1]);
  });
  return { netns, links };
}

async function destroyNamespaces(netns: string[], links: string[]): Promise<void> {
  // Kill in a few rounds: sshd may fork a session between a scan and the kill.
  for (let round = 0; round < 5; round++) {
    const pids = await pidsInNetns(netns);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await sleep(20);
  }
  const present = new Set(await readdir("/sys/class/net").catch(() => [] as string[]));
  const nsPresent = new Set(await readdir(NETNS_DIR).catch(() => [] as string[]));
  await ipBatch(
    [
      ...links.filter((l) => present.has(l)).map((l) => `link del ${l}`),
      ...netns.filter((n) => nsPresent.has(n)).map((n) => `netns del ${n}`),
    ],
    true,
  );
}

async function pidsInNetns(netns: string[]): Promise<number[]> {
  const inodes = new Set<string>();
  for (const n of netns) {
    const st = await stat(join(NETNS_DIR, n)).catch(() => null);
    if (st) inodes.add(`net:[${st.ino}]`);
  }
  if (inodes.size === 0) return [];
  const pids: number[] = [];
  const entries = await readdir("/proc");
  await Promise.all(
    entries.map(async (e) => {
      if (!/^\d+$/.test(e)) return;
      const link = await readlink(`/proc/${e}/ns/net`).catch(() => null);
      if (link !== null && inodes.has(link)) pids.push(Number(e));
    }),
  );
  return pids;
}

async function sshdPid(root: string, hostId: string, ns: string): Promise<number | null> {
  const pid = Number((await readFile(join(hostDir(root, hostId), "sshd.pid"), "utf8").catch(() => "")).trim());
  if (!Number.isInteger(pid) || pid <= 0) return null;
  // Guard against a recycled pid: it must still live in the host's namespace.
  const st = await stat(join(NETNS_DIR, ns)).catch(() => null);
  const link = await readlink(`/proc/${pid}/ns/net`).catch(() => null);
  return st && link === `net:[${st.ino}]` ? pid : null;
}

async function allocateHosts(root: string, simId: string, specs: HostSpec[]): Promise<SimHost[]> {
  return await withFileLock(MACHINE_LOCK, async () => {
    const others = await addressesOfOtherSims(root);
    return await updateState(root, (s) => {
      const own = Object.values(s.hosts);
      const ext = pickAddresses(
        "198.18",
        specs.length,
        own.map((h) => h.externalIp),
        others.ext,
      );
      const int = pickAddresses(
        "198.19",
        specs.length,
        own.map((h) => h.internalIp),
        others.int,
      );
      return specs.map((spec, i) => {
        const id = `h${s.nextHostSeq++}`;
        const host: SimHost = {
          id,
          netns: netnsName(simId, id),
          externalIp: ext[i] ?? "",
          internalIp: int[i] ?? "",
          workerId: spec.workerId,
          cluster: spec.cluster,
          nodeName: spec.nodeName,
          zone: spec.zone,
          hostname: spec.hostname ?? defaultHostname(spec, id),
          alive: false,
        };
        s.hosts[id] = host;
        return host;
      });
    });
  });
}

// TPU VM hostnames look like t1v-n-<8 hex>-w-<worker>.
function defaultHostname(spec: HostSpec, id: string): string {
  if (spec.nodeName === null) return `${spec.cluster}-${id}`.slice(0, 63);
  const hash = createHash("sha256").update(spec.nodeName).digest("hex").slice(0, 8);
  return `t1v-n-${hash}-w-${spec.workerId}`;
}

async function addressesOfOtherSims(root: string): Promise<{ ext: string[]; int: string[] }> {
  const ext: string[] = [];
  const int: string[] = [];
  for (const dir of await simDirs()) {
    if (dir === root) continue;
    const s: SimState | null = await readState(dir).catch(() => null);
    for (const h of Object.values(s?.hosts ?? {})) {
      ext.push(h.externalIp);
      int.push(h.internalIp);
    }
  }
  return { ext, int };
}

// Each batch gets a /24 this sim has never used (so a relaunch gets new addresses) and last octets that
// mix one and two digits, so that string order differs from numeric order (198.18.7.13 < 198.18.7.5).
export function pickAddresses(prefix16: string, n: number, ownUsed: string[], othersUsed: string[]): string[] {
  const thirdOf = (a: string) => Number(a.split(".")[2]);
  const ownThirds = new Set(ownUsed.filter((a) => a.startsWith(prefix16 + ".")).map(thirdOf));
  const taken = new Set([...ownUsed, ...othersUsed]);
  const otherThirds = new Set(othersUsed.filter((a) => a.startsWith(prefix16 + ".")).map(thirdOf));
  const out: string[] = [];
  let remaining = n;
  const usedThisCall = new Set<number>();
  while (remaining > 0) {
    const chunk = Math.min(remaining, 200);
    const candidates = shuffle(Array.from({ length: 254 }, (_, i) => i + 1)).filter((t) => !usedThisCall.has(t));
    const third =
      candidates.find((t) => !ownThirds.has(t) && !otherThirds.has(t)) ??
      candidates.find((t) => !ownThirds.has(t)) ??
      candidates.find((t) => freeLastOctets(prefix16, t, taken).length >= chunk);
    if (third === undefined) throw new Error(`no free addresses left in ${prefix16}.0.0/16`);
    usedThisCall.add(third);
    const free = freeLastOctets(prefix16, third, taken);
    const picked: number[] = [];
    const takeFrom = (lo: number, hi: number) => {
      const c = shuffle(free.filter((o) => o >= lo && o <= hi && !picked.includes(o)));
      if (c[0] !== undefined) picked.push(c[0]);
    };
    if (chunk >= 2) {
      takeFrom(5, 9);
      takeFrom(10, 49);
    }
    for (const o of shuffle(free)) {
      if (picked.length >= chunk) break;
      if (!picked.includes(o)) picked.push(o);
    }
    if (picked.length < chunk) throw new Error(`no free addresses left in ${prefix16}.${third}.0/24`);
    for (const o of shuffle(picked.slice(0, chunk))) {
      const a = `${prefix16}.${third}.${o}`;
      out.push(a);
      taken.add(a);
    }
    remaining -= chunk;
  }
  return out;
}

function freeLastOctets(prefix16: string, third: number, taken: Set<string>): number[] {
  const free: number[] = [];
  for (let o = 2; o <= 254; o++) if (!taken.has(`${prefix16}.${third}.${o}`)) free.push(o);
  return free;
}

function shuffle<T>(xs: T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    const t = a[i] as T;
    a[i] = a[j] as T;
    a[j] = t;
  }
  return a;
}

async function prepareHostDir(
  root: string,
  h: SimHost,
  keys: string[],
  user: { uid: number; gid: number },
  metadataAddr: string,
  project: string,
): Promise<void> {
  const dir = hostDir(root, h.id);
  const home = join(dir, "home");
  const tmp = join(dir, "tmp");
  await mkdir(home, { recursive: true });
  await cp("/etc/skel", home, { recursive: true }).catch(() => undefined);
  // SkyPilot makes ~/sky_workdir on every node at provisioning (`mkdir -p ~/sky_workdir` in
  // SETUP_SKY_DIRS_COMMANDS, sky/skylet/constants.py); setup and run start there (make_task_bash_script).
  await mkdir(join(home, "sky_workdir"), { recursive: true });
  await chownTree(home, user.uid, user.gid);
  await chmod(home, 0o755);
  // /tmp of the host; SIM_ROOT is mounted again inside it, because it lives under the real /tmp.
  await mkdir(join(tmp, basename(root)), { recursive: true });
  await chmod(tmp, 0o1777);
  await writeFile(join(dir, "authorized_keys"), keys.map((k) => k.trim() + "\n").join(""), { mode: 0o644 });
  const config = [
    `# sshd of simulated TPU VM ${h.id} (${h.hostname})`,
    "ListenAddress 0.0.0.0:22",
    "AddressFamily inet",
    ...hostKeyFiles(root, h.id).map((f) => `HostKey ${f}`),
    `PidFile ${join(dir, "sshd.pid")}`,
    `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "StrictModes no",
    "PermitRootLogin no",
    `AllowUsers ${GCPUSER}`,
    "PrintMotd no",
    "PrintLastLog no",
    "X11Forwarding no",
    "AllowTcpForwarding yes",
    `SetEnv PATH=${hostPath(root)} GCE_METADATA_HOST=${metadataAddr}`,
    "Subsystem sftp internal-sftp",
    "",
  ].join("\n");
  await writeFile(join(dir, "sshd_config"), config, { mode: 0o644 });
  // A GCE VM's /etc/hosts names the metadata server (GoogleCloudPlatform/guest-configs google_set_hostname:
  // `echo "169.254.169.254 metadata.google.internal  # Added by Google" >> /etc/hosts`), so clients that fall
  // back to that name (JAX's get_metadata, tpu-deploy's probe without GCE_METADATA_HOST) find it; the sim DNATs
  // that address to the emulator. The short name `metadata` (the google.internal DNS search domain on GCE) is
  // listed too, as the sim has no DNS.
  const hostsFile = [
    "127.0.0.1 localhost",
    "::1 localhost ip6-localhost ip6-loopback",
    `${h.internalIp} ${h.hostname}.${h.zone}.c.${project}.internal ${h.hostname}  # Added by Google`,
    `${METADATA_IP} metadata.google.internal  # Added by Google`,
    `${METADATA_IP} metadata`,
    "",
  ].join("\n");
  await writeFile(join(dir, "etc-hosts"), hostsFile, { mode: 0o644 });
}

async function chownTree(path: string, uid: number, gid: number): Promise<void> {
  await chown(path, uid, gid);
  const st = await stat(path);
  if (!st.isDirectory()) return;
  for (const e of await readdir(path)) await chownTree(join(path, e), uid, gid);
}

// sshd runs in the host's netns plus its own mount and UTS namespaces: /home/gcpuser and /tmp are the
// host's own dirs, the offline tools shadow /usr/local/bin (so even a login shell whose /etc/profile
// resets PATH finds them), and `hostname` is the VM's name.
async function startSshd(root: string, h: SimHost, deadline: number, metadataAddr: string): Promise<void> {
  const dir = hostDir(root, h.id);
  const q = shellQuote;
  const [mdHost, mdPort] = metadataAddr.split(":");
  const script = [
    "set -e",
    `ip -batch - <<'EOF'`,
    `addr add ${h.externalIp}/16 dev ext0`,
    "link set ext0 up",
    `addr add ${h.internalIp}/16 dev ens4`,
    "link set ens4 up",
    "link set lo up",
    `route add ${METADATA_IP}/32 via ${mdHost ?? EXT_GATEWAY} dev ext0`,
    "EOF",
    // 169.254.169.254:80 (and so metadata.google.internal) reaches the metadata emulator, as on GCE.
    `nft -f - <<'EOF'`,
    "table ip tpd_metadata {",
    "  chain output {",
    "    type nat hook output priority -100; policy accept;",
    `    ip daddr ${METADATA_IP} tcp dport 80 dnat to ${mdHost ?? EXT_GATEWAY}:${mdPort ?? "80"}`,
    "  }",
    "}",
    "EOF",
    `hostname ${q(h.hostname)}`,
    // A machine without /etc/hosts (a debootstrap'd Debian has none; the installer or the image writes it)
    // has no file to bind over: this host's mount namespace gets an /etc overlay where it exists.
    `[ -e /etc/hosts ] || { mkdir -p ${q(join(dir, "etc-upper"))} ${q(join(dir, "etc-work"))} && mount -t overlay overlay -o lowerdir=/etc,upperdir=${q(join(dir, "etc-upper"))},workdir=${q(join(dir, "etc-work"))} /etc && : > /etc/hosts; }`,
    `mount --bind ${q(join(dir, "etc-hosts"))} /etc/hosts`,
    `mount --bind ${q(root)} ${q(join(dir, "tmp", basename(root)))}`,
    `mount --rbind ${q(join(dir, "tmp"))} /tmp`,
    `mount --bind ${q(join(dir, "home"))} ${GCPUSER_HOME}`,
    `mount --bind ${q(join(root, "host-bin"))} /usr/local/bin`,
    `exec /usr/sbin/sshd -D -e -f ${q(join(dir, "sshd_config"))}`,
  ].join("\n");
  const log = openSync(join(dir, "sshd.log"), "a");
  const child = spawn(
    "ip",
    ["netns", "exec", h.netns, "unshare", "--mount", "--uts", "--propagation", "private", "/bin/sh", "-c", script],
    { detached: true, stdio: ["ignore", log, log], env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C" } },
  );
  closeSync(log);
  let exited: string | null = null;
  const onExit = (code: number | null, sig: string | null) => {
    exited = `exit ${code ?? sig}`;
  };
  child.on("exit", onExit);
  child.on("error", (e) => {
    exited = String(e);
  });
  try {
    for (;;) {
      if (exited !== null) {
        const text = await readFile(join(dir, "sshd.log"), "utf8").catch(() => "");
        throw new Error(`sshd of host ${h.id} died (${exited}): ${text.trim().slice(-2000)}`);
      }
      // sshd writes its pid file after it listens; probing TCP earlier would stall on ARP for an
      // address not yet configured.
      if ((await exists(join(dir, "sshd.pid"))) && (await tcpAccepts(h.externalIp, 22))) return;
      if (Date.now() > deadline) throw new Error(`sshd of host ${h.id} (${h.externalIp}) did not accept TCP in time`);
      await sleep(10);
    }
  } finally {
    child.off("exit", onExit);
    child.unref();
  }
}

function tcpAccepts(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: ip, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once("connect", () => done(true));
    sock.once("error", () => done(false));
  });
}

export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

async function ipBatch(cmds: string[], force = false): Promise<void> {
  if (cmds.length === 0) return;
  const args = force ? ["-force", "-batch", "-"] : ["-batch", "-"];
  const r = await run("ip", args, cmds.join("\n") + "\n");
  if (r.code !== 0 && !force) throw new Error(`ip -batch failed (${r.code}): ${r.stderr.trim()}`);
}

export function run(cmd: string, args: string[], input?: string, timeoutMs = 60_000, env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], env: env ?? process.env });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code: code ?? (signal ? 128 + 9 : 1) });
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(input ?? "");
  });
}

async function must(cmd: string, args: string[], input?: string): Promise<RunResult> {
  const r = await run(cmd, args, input);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
  return r;
}

async function exists(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null)) !== null;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
