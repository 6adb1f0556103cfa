// SkyPilot's per-cluster SSH config (~/.sky/generated/ssh/<cluster>; docs/upstream/skypilot.md §5). OpenSSH
// itself reads each host's settings (`ssh -G`, adapters/sky-ssh.ts); what it cannot do is list the hosts a
// file names, so that part is here: the `Host` lines of the cluster, by SkyPilot's index. Pure.

export interface ClusterAlias {
  alias: string;
  /** SkyPilot's index: 0 for the head `<c>`, N for `<c>-workerN`. */
  index: number;
}

export type ClusterAliases = { ok: true; aliases: ClusterAlias[] } | { ok: false; message: string };

// `<c>` is rank 0 and `<c>-workerN` (N ≥ 1, no leading zeros, as SkyPilot writes it) is N.
function clusterIndex(alias: string, cluster: string): number | null {
  if (alias === cluster) return 0;
  const prefix = `${cluster}-worker`;
  if (!alias.startsWith(prefix)) return null;
  const n = alias.slice(prefix.length);
  return /^[1-9][0-9]*$/.test(n) ? Number(n) : null;
}

/** The cluster's concrete host aliases (patterns and other clusters' entries left out), head first. */
export function clusterAliases(text: string, cluster: string): ClusterAliases {
  const seen = new Map<string, number>();
  for (const raw of text.split("\n")) {
    const m = /^\s*host(?:\s+|\s*=\s*)(.*)$/i.exec(raw);
    if (!m) continue;
    for (const pattern of (m[1] ?? "").replace(/#.*$/, "").trim().split(/\s+/)) {
      if (pattern === "" || pattern.startsWith("!") || /[*?]/.test(pattern)) continue;
      const index = clusterIndex(pattern, cluster);
      if (index !== null && !seen.has(pattern)) seen.set(pattern, index);
    }
  }
  const aliases = [...seen].map(([alias, index]) => ({ alias, index })).sort((a, b) => a.index - b.index);
  const problems: string[] = [];
  if (aliases.length === 0) problems.push(`no Host block for "${cluster}" or "${cluster}-workerN"`);
  else if (aliases[0]?.index !== 0) problems.push(`no Host block for the head "${cluster}"`);
  const max = aliases.at(-1)?.index ?? 0;
  const missing = Array.from({ length: Math.max(0, max - 1) }, (_, i) => i + 1).filter((i) => !aliases.some((a) => a.index === i));
  if (missing.length > 0) problems.push(`missing ${missing.map((n) => `"${cluster}-worker${n}"`).join(", ")}`);
  if (problems.length > 0) return { ok: false, message: `SSH config of cluster "${cluster}" is incomplete: ${problems.join("; ")}` };
  return { ok: true, aliases };
}

/** What `ssh -G` says about one host, the settings tpu-deploy needs. */
export interface SshSettings {
  hostName: string;
  user: string;
  port: number;
  /** The first IdentityFile, as written (a leading ~ is not expanded by ssh -G). */
  identityFile: string | undefined;
  /** ProxyCommand with its %-tokens still in it, when one is set (gcp.ssh_proxy_command, Docker images). */
  proxyCommand: string | undefined;
  proxyJump: string | undefined;
}

/** `ssh -G` output: one `keyword value` line per setting, keywords in lower case. */
export function parseSshG(output: string): SshSettings | undefined {
  const first = new Map<string, string>();
  for (const line of output.split("\n")) {
    const i = line.indexOf(" ");
    if (i <= 0) continue;
    const key = line.slice(0, i);
    if (!first.has(key)) first.set(key, line.slice(i + 1));
  }
  const hostName = first.get("hostname");
  const user = first.get("user");
  const port = Number(first.get("port"));
  if (!hostName || !user || !Number.isInteger(port)) return undefined;
  const proxy = first.get("proxycommand");
  const jump = first.get("proxyjump");
  return {
    hostName,
    user,
    port,
    identityFile: first.get("identityfile"),
    proxyCommand: proxy && proxy !== "none" ? proxy : undefined,
    proxyJump: jump && jump !== "none" ? jump : undefined,
  };
}

export function expandTilde(path: string, home: string): string {
  // SkyPilot writes its keys with Python's expanduser, which reads $HOME: so is the ~ it writes.
  if (path === "~") return home;
  if (path.startsWith("~/")) return `${home.replace(/\/+$/, "")}/${path.slice(2)}`;
  return path;
}

/** ProxyCommand's tokens as OpenSSH expands them (ssh_config(5) TOKENS: %h %p %r %n %%). */
export function expandProxyCommand(command: string, t: { host: string; port: number; user: string; alias: string }): string {
  return command.replace(/%([hprn%])/g, (_, c: string) =>
    c === "h" ? t.host : c === "p" ? String(t.port) : c === "r" ? t.user : c === "n" ? t.alias : "%",
  );
}
