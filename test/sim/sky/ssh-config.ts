// SkyPilot's SSHConfigHelper (sky/utils/cluster_utils.py), byte for byte as in skypilot.md §5:
// an Include line prepended to ~/.ssh/config, one file per cluster under ~/.sky/generated/ssh/,
// the cluster's private key under ~/.sky/generated/ssh-keys/.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const INCLUDE = "Include ~/.sky/generated/ssh/*";
const SKY_SSH_USER_PLACEHOLDER = "skypilot:ssh_user"; // sky/skylet/constants.py

export interface SshHostEntry {
  alias: string;
  ip: string;
  port: number;
}

export function sshClusterPath(home: string, cluster: string): string {
  return join(home, ".sky", "generated", "ssh", cluster);
}

export function sshKeyPath(home: string, cluster: string): string {
  return join(home, ".sky", "generated", "ssh-keys", `${cluster}.key`);
}

function ensureInclude(home: string): void {
  const sshDir = join(home, ".ssh");
  const config = join(sshDir, "config");
  if (!existsSync(sshDir)) mkdirSync(sshDir, { recursive: true, mode: 0o700 });
  if (!existsSync(config)) {
    writeFileSync(config, "\n");
    chmodSync(config, 0o644);
  }
  const text = readFileSync(config, "utf8");
  const lines = text.split(/(?<=\n)/);
  let found = false;
  for (const line of lines) {
    const s = line.trim();
    if (s === INCLUDE) {
      found = true;
      break;
    }
    if (s.includes("Host")) break;
  }
  if (found) return;
  const joined = `# Added by SkyPilot for ssh config of all clusters\n${INCLUDE}\n` + lines.join("");
  writeFileSync(config, pyStrip(joined) + "\n\n");
}

function pyStrip(s: string): string {
  return s.replace(/^[\s]+|[\s]+$/g, "");
}

export function generateLocalKeyFile(home: string, cluster: string, privateKey: string): string {
  const dir = join(home, ".sky", "generated", "ssh-keys");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = sshKeyPath(home, cluster);
  const current = existsSync(path) ? readFileSync(path, "utf8") : null;
  if (current !== privateKey) {
    rmSync(path, { force: true });
    writeFileSync(path, privateKey, { mode: 0o600 });
  }
  chmodSync(path, 0o600);
  return path;
}

// hosts: head first, then workers in SkyPilot's stable order (the -workerN aliases follow it).
export function addCluster(
  home: string,
  cluster: string,
  clusterNameOnCloud: string,
  ips: string[],
  privateKey: string,
  user: string,
  port = 22,
  proxyCommand: string | null = null,
): void {
  ensureInclude(home);
  generateLocalKeyFile(home, cluster, privateKey);
  const keyRef = `~/.sky/generated/ssh-keys/${cluster}.key`;
  let text = "";
  ips.forEach((ip, i) => {
    const alias = i === 0 ? cluster : `${cluster}-worker${i}`;
    // skypilot-org/skypilot sky/utils/cluster_utils.py SSHConfigHelper._get_generated_config: `ProxyCommand {proxy_command}` is the block's last line when gcp.ssh_proxy_command
    // is set, with %w → the node's index (add_cluster) and the user placeholder filled in
    // (ssh_credential_from_yaml: constants.SKY_SSH_USER_PLACEHOLDER); %h and %p stay for ssh.
    const proxy =
      proxyCommand === null ? [] : [`  ProxyCommand ${proxyCommand.replace(/%w/g, String(i)).replaceAll(SKY_SSH_USER_PLACEHOLDER, user)}`];
    text +=
      [
        `# Added by sky (use \`sky stop/down ${cluster}\` to remove)`,
        `Host ${alias}`,
        `  HostName ${ip}`,
        `  User ${user}`,
        `  IdentityFile ${keyRef}`,
        "  IdentitiesOnly yes",
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile=/dev/null",
        "  GlobalKnownHostsFile=/dev/null",
        `  Port ${port}`,
        `  SetEnv SKY_CLUSTER_NAME=${clusterNameOnCloud}`,
        ...proxy,
      ].join("\n") + "\n\n";
  });
  const dir = join(home, ".sky", "generated", "ssh");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = sshClusterPath(home, cluster);
  writeFileSync(path, text);
  chmodSync(path, 0o644);
}

export function removeCluster(home: string, cluster: string): void {
  rmSync(sshClusterPath(home, cluster), { force: true });
  rmSync(sshKeyPath(home, cluster), { force: true });
}

export function listClusterNames(home: string): string[] {
  const dir = join(home, ".sky", "generated", "ssh");
  if (!existsSync(dir)) return [];
  return readdirSync(dir);
}
