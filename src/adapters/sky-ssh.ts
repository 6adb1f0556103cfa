// SkyPilot's per-cluster SSH config (~/.sky/generated/ssh/<cluster>, docs/upstream/skypilot.md §5): the
// file lists the hosts, and OpenSSH's own reading of it (`ssh -G -F <file> <alias>`) gives each host's
// address, user, port, key and proxy, exactly as `ssh <alias>` would use them.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { clusterAliases, expandTilde, parseSshG } from "../core/ssh-config.js";
import type { SkyHost } from "../core/ranks.js";
import { OperationError } from "../errors.js";

const run = promisify(execFile);

export function skySshConfigPath(home: string, cluster: string): string {
  return join(home, ".sky", "generated", "ssh", cluster);
}

/** The file's text, or undefined when SkyPilot has not written it (or removed it). */
export function readSkySshConfig(home: string, cluster: string): string | undefined {
  try {
    return readFileSync(skySshConfigPath(home, cluster), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Every host of the cluster as SkyPilot's SSH config defines it, head first. */
export async function skyHosts(home: string, cluster: string, env: NodeJS.ProcessEnv): Promise<SkyHost[]> {
  const path = skySshConfigPath(home, cluster);
  const text = readSkySshConfig(home, cluster);
  if (text === undefined) {
    throw new OperationError("hosts_mismatch", `SkyPilot's SSH config for ${cluster} is missing (${path})`, {
      hint: `run \`sky status ${cluster}\` (it rewrites the file), then try again`,
    });
  }
  const listed = clusterAliases(text, cluster);
  if (!listed.ok) throw new OperationError("hosts_mismatch", `${path}: ${listed.message}`);
  return await Promise.all(
    listed.aliases.map(async ({ alias, index }) => {
      let stdout: string;
      try {
        ({ stdout } = await run("ssh", ["-G", "-F", path, alias], { env, timeout: 30_000, encoding: "utf8" }));
      } catch (err) {
        const e = err as NodeJS.ErrnoException & { stderr?: string };
        throw new OperationError(
          "hosts_mismatch",
          `cannot read ${path} for ${alias}: ${e.code === "ENOENT" ? "ssh is not installed" : (e.stderr ?? e.message).trim()}`,
          {
            hint:
              e.code === "ENOENT"
                ? "install OpenSSH's client (apt-get install openssh-client): tpu-deploy reads SkyPilot's SSH config through `ssh -G`"
                : "run `sky status` to rewrite the file",
          },
        );
      }
      const s = parseSshG(stdout);
      if (!s) throw new OperationError("hosts_mismatch", `ssh -G -F ${path} ${alias} printed no hostname, user and port`);
      if (s.proxyJump) {
        throw new OperationError("hosts_mismatch", `${alias} uses ProxyJump ${s.proxyJump}, which tpu-deploy does not follow`, {
          hint: "write it as a ProxyCommand (ssh -W %h:%p <jump host>), as SkyPilot's gcp.ssh_proxy_command does",
        });
      }
      if (!s.identityFile) throw new OperationError("hosts_mismatch", `${path}: ${alias} has no IdentityFile`);
      return {
        alias,
        index,
        hostName: s.hostName,
        user: s.user,
        port: s.port,
        identityFile: expandTilde(s.identityFile, home),
        ...(s.proxyCommand ? { proxyCommand: s.proxyCommand } : {}),
      };
    }),
  );
}
