// Reads SkyPilot's per-cluster SSH config (~/.sky/generated/ssh/<cluster>) the way OpenSSH's
// readconf.c would: keywords case-insensitive, `Key value` / `Key=value`, quotes, `#` comments,
// Host patterns with `*`, `?` and `!`, and the first value obtained for a keyword wins.

export interface SshHostEntry {
  alias: string;
  hostName: string;
  user: string | null;
  port: number;
  identityFile: string | null;
  index: number;
}

export interface SshConfigProblem {
  line: number;
  message: string;
}

export type SshConfigParse = { kind: "ok"; entries: SshHostEntry[] } | { kind: "invalid"; problems: SshConfigProblem[] };

export interface ClusterHost extends SshHostEntry {
  user: string;
  identityFile: string;
}

export type ClusterHostsProblem =
  | { kind: "no-hosts" }
  | { kind: "no-head" }
  | { kind: "gap"; missing: number[] }
  | { kind: "duplicate"; index: number }
  | { kind: "missing-field"; alias: string; field: "User" | "IdentityFile" };

export type ClusterHostsResult = { kind: "ok"; hosts: ClusterHost[] } | { kind: "error"; problems: ClusterHostsProblem[]; message: string };

interface Directive {
  line: number;
  keyword: string;
  args: string[];
}

const WHITESPACE = " \t\r\n";
const SINGLE_VALUE = new Set(["hostname", "user", "port", "identityfile"]);

export function parseSshConfig(text: string, cluster: string): SshConfigParse {
  const problems: SshConfigProblem[] = [];
  const directives: Directive[] = [];
  text.split("\n").forEach((raw, i) => {
    const parsed = parseLine(raw);
    if (parsed === null) return;
    if ("message" in parsed) {
      problems.push({ line: i + 1, message: parsed.message });
      return;
    }
    const problem = checkDirective(parsed.keyword, parsed.args);
    if (problem !== null) problems.push({ line: i + 1, message: problem });
    else directives.push({ line: i + 1, ...parsed });
  });
  if (problems.length > 0) return { kind: "invalid", problems };

  const entries: SshHostEntry[] = [];
  for (const alias of concreteAliases(directives)) {
    const index = clusterIndex(alias, cluster);
    if (index !== null) entries.push(resolveHost(directives, alias, index));
  }
  return { kind: "ok", entries };
}

export function expandTilde(path: string, home: string): string {
  // OpenSSH also expands ~user; SkyPilot only ever writes the bare ~, and a pure function cannot
  // look up another user's home, so ~user is left as written.
  if (path === "~") return home;
  if (path.startsWith("~/")) return `${home.replace(/\/+$/, "")}/${path.slice(2)}`;
  return path;
}

export function clusterHosts(entries: readonly SshHostEntry[], cluster: string): ClusterHostsResult {
  // The alias is the source of truth for the index; entries of other clusters are not ours.
  const mine = entries
    .flatMap((e) => {
      const index = clusterIndex(e.alias, cluster);
      return index === null ? [] : [{ ...e, index }];
    })
    .sort((a, b) => a.index - b.index);
  const problems: ClusterHostsProblem[] = [];
  if (mine.length === 0) {
    problems.push({ kind: "no-hosts" });
  } else {
    if (mine[0]?.index !== 0) problems.push({ kind: "no-head" });
    const seen = new Set<number>();
    for (const e of mine) {
      if (seen.has(e.index)) problems.push({ kind: "duplicate", index: e.index });
      seen.add(e.index);
    }
    const max = mine[mine.length - 1]?.index ?? 0;
    const missing: number[] = [];
    for (let i = 1; i < max; i++) if (!seen.has(i)) missing.push(i);
    if (missing.length > 0) problems.push({ kind: "gap", missing });
  }
  const hosts: ClusterHost[] = [];
  for (const e of mine) {
    if (e.user === null) problems.push({ kind: "missing-field", alias: e.alias, field: "User" });
    if (e.identityFile === null) problems.push({ kind: "missing-field", alias: e.alias, field: "IdentityFile" });
    if (e.user !== null && e.identityFile !== null) hosts.push({ ...e, user: e.user, identityFile: e.identityFile });
  }
  if (problems.length > 0) {
    return { kind: "error", problems, message: describeProblems(problems, cluster) };
  }
  return { kind: "ok", hosts };
}

function describeProblems(problems: readonly ClusterHostsProblem[], cluster: string): string {
  const parts = problems.map((p) => {
    switch (p.kind) {
      case "no-hosts":
        return `no Host block for "${cluster}" or "${cluster}-workerN"`;
      case "no-head":
        return `no Host block for the head "${cluster}"`;
      case "gap":
        return `missing ${p.missing.map((n) => `"${cluster}-worker${n}"`).join(", ")}`;
      case "duplicate":
        return `more than one entry for host index ${p.index}`;
      case "missing-field":
        return `"${p.alias}" has no ${p.field}`;
      default:
        return assertNever(p);
    }
  });
  return `SSH config of cluster "${cluster}" is incomplete: ${parts.join("; ")}`;
}

function assertNever(x: never): never {
  throw new Error(`unexpected problem ${JSON.stringify(x)}`);
}

// `<c>` is rank 0 and `<c>-workerN` (N ≥ 1, no leading zeros, as SkyPilot writes it) is N.
function clusterIndex(alias: string, cluster: string): number | null {
  if (alias === cluster) return 0;
  const prefix = `${cluster}-worker`;
  if (!alias.startsWith(prefix)) return null;
  const n = alias.slice(prefix.length);
  return /^[1-9][0-9]*$/.test(n) ? Number(n) : null;
}

function concreteAliases(directives: readonly Directive[]): string[] {
  const seen = new Set<string>();
  for (const d of directives) {
    if (d.keyword !== "host") continue;
    for (const pattern of d.args) {
      if (!pattern.startsWith("!") && !/[*?]/.test(pattern)) seen.add(pattern);
    }
  }
  return [...seen];
}

function resolveHost(directives: readonly Directive[], alias: string, index: number): SshHostEntry {
  const values = new Map<string, string>();
  // Lines before the first Host apply to every host, as in OpenSSH.
  let active = true;
  for (const d of directives) {
    if (d.keyword === "host") {
      active = hostLineMatches(d.args, alias);
    } else if (active && SINGLE_VALUE.has(d.keyword) && !values.has(d.keyword)) {
      const value = d.args[0];
      if (value !== undefined) values.set(d.keyword, value);
    }
  }
  return {
    alias,
    hostName: values.get("hostname") ?? alias,
    user: values.get("user") ?? null,
    port: Number(values.get("port") ?? "22"),
    identityFile: values.get("identityfile") ?? null,
    index,
  };
}

// A negated pattern that matches vetoes the whole line, whatever else matches.
function hostLineMatches(patterns: readonly string[], alias: string): boolean {
  let matched = false;
  for (const p of patterns) {
    const negated = p.startsWith("!");
    if (globMatches(negated ? p.slice(1) : p, alias)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

function globMatches(pattern: string, s: string): boolean {
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${re}$`, "s").test(s);
}

function checkDirective(keyword: string, args: readonly string[]): string | null {
  switch (keyword) {
    case "match":
    case "include":
      return `"${keyword === "match" ? "Match" : "Include"}" is not supported in a cluster's SSH config; remove it or let \`sky status\` rewrite the file`;
    case "host":
      return args.some((a) => a === "" || a === "!") ? "Host has an empty pattern" : null;
  }
  if (!SINGLE_VALUE.has(keyword)) return null;
  if (args[0] === undefined || args[0] === "") return `missing argument after "${keyword}"`;
  // OpenSSH allows several IdentityFile lines, but each takes exactly one path.
  if (args.length > 1) return `garbage at end of line after "${keyword} ${args[0]}"`;
  if (keyword === "port") {
    const port = /^[0-9]+$/.test(args[0]) ? Number(args[0]) : NaN;
    if (!(port >= 1 && port <= 65535)) return `bad port number "${args[0]}"`;
  }
  return null;
}

// readconf.c process_config_line + strdelim: the keyword ends at whitespace or one "=".
function parseLine(raw: string): { keyword: string; args: string[] } | { message: string } | null {
  const line = raw.replace(/[ \t\r\n\f]+$/, "").replace(/^[ \t\r\n]+/, "");
  if (line === "" || line.startsWith("#")) return null;
  let end = 0;
  while (end < line.length && !`${WHITESPACE}="`.includes(line.charAt(end))) end++;
  if (line.charAt(end) === '"') return { message: "quoted keyword" };
  const keyword = line.slice(0, end).toLowerCase();
  if (keyword === "") return { message: "line starts with '='" };
  let rest = line.slice(end);
  const leading = /^[ \t\r\n]*=?[ \t\r\n]*/.exec(rest);
  rest = rest.slice(leading?.[0].length ?? 0);
  if (rest === "") return { message: `no argument after keyword "${keyword}"` };
  const args = splitArgs(rest);
  if (args === null) return { message: "invalid quotes" };
  return { keyword, args };
}

// misc.c argv_split(…, terminate_on_comment=1): '…' and "…" quote, backslash escapes quotes,
// backslash and (outside quotes) space, and a token starting with # ends the line.
function splitArgs(s: string): string[] | null {
  const args: string[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s.charAt(i);
    if (c === " " || c === "\t") {
      i++;
      continue;
    }
    if (c === "#") break;
    let arg = "";
    let quote = "";
    for (; i < s.length; i++) {
      const ch = s.charAt(i);
      const next = s.charAt(i + 1);
      if (ch === "\\" && (next === "'" || next === '"' || next === "\\" || (quote === "" && next === " "))) {
        arg += next;
        i++;
      } else if (quote === "" && (ch === " " || ch === "\t")) {
        break;
      } else if (quote === "" && (ch === '"' || ch === "'")) {
        quote = ch;
      } else if (quote !== "" && ch === quote) {
        quote = "";
      } else {
        arg += ch;
      }
    }
    if (quote !== "") return null;
    args.push(arg);
  }
  return args;
}
