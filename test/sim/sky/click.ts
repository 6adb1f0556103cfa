// A click 8.1 look-alike for sky's command line: the options of every command are read from the
// verbatim --help texts (so every real option is accepted and nothing else), parsed with click's
// OptionParser rules, and errors are raised as click formats them.
import { existsSync, readFileSync, statSync } from "node:fs";
import { UsageError } from "./errors.js";
import { HELP_TEXTS } from "./help-texts.js";
import { getCloseMatches, pyStr } from "./pyfmt.js";

export type ParamType =
  | { kind: "string" }
  | { kind: "int" }
  | { kind: "int-or-none" }
  | { kind: "choice"; choices: string[]; caseSensitive: boolean }
  | { kind: "dir" }
  | { kind: "dotenv" }
  | { kind: "env"; what: "env" | "secret" };

export interface OptionSpec {
  dest: string;
  names: string[]; // primary names, declaration order (used in error hints)
  secondary: string[]; // the "off" names of a boolean pair
  flag: boolean;
  multiple: boolean;
  type: ParamType;
  help: boolean;
}

export interface ArgumentSpec {
  dest: string;
  metavar: string;
  required: boolean;
  variadic: boolean;
}

export interface CommandSpec {
  key: string; // "launch", "api cancel"
  usage: string; // "Usage: sky launch [OPTIONS] [ENTRYPOINT]..."
  options: OptionSpec[];
  args: ArgumentSpec[];
}

export type OptValue = string | number | boolean | null | string[] | [string, string][] | Record<string, string>;

export class Parsed {
  constructor(
    readonly values: Map<string, OptValue>,
    readonly present: Set<string>,
  ) {}
  str(dest: string): string | null {
    const v = this.values.get(dest);
    return typeof v === "string" ? v : null;
  }
  int(dest: string): number | null {
    const v = this.values.get(dest);
    return typeof v === "number" ? v : null;
  }
  bool(dest: string): boolean {
    return this.values.get(dest) === true;
  }
  tri(dest: string): boolean | null {
    const v = this.values.get(dest);
    return typeof v === "boolean" ? v : null;
  }
  list(dest: string): string[] {
    const v = this.values.get(dest);
    return Array.isArray(v) ? (v as unknown[]).filter((x): x is string => typeof x === "string") : [];
  }
  pairs(dest: string): [string, string][] {
    const v = this.values.get(dest);
    return Array.isArray(v) ? (v as unknown[]).filter((x): x is [string, string] => Array.isArray(x)) : [];
  }
  dict(dest: string): Record<string, string> | null {
    const v = this.values.get(dest);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : null;
  }
}

// Options that --help does not show but sky accepts (hidden=True in sky/client/cli/command.py, flags.py).
const HIDDEN: Record<string, string[]> = {
  launch: ["--cloud TEXT", "--region TEXT", "--zone TEXT", "--docker"],
  exec: ["--cloud TEXT", "--region TEXT", "--zone TEXT", "--cluster, -c TEXT"],
  "jobs launch": ["--cloud TEXT", "--region TEXT", "--zone TEXT"],
};
// multiple=True options (not visible in --help).
const MULTIPLE = new Set(["config", "env", "secret", "ports"]);
// Names declared short-first in SkyPilot (help output always lists short first; error hints use declaration order).
const SHORT_FIRST = new Set<string>();
// click.Choice(case_sensitive=False) options.
const CASE_INSENSITIVE = new Set(["disk_tier", "network_tier"]);

const specCache = new Map<string, CommandSpec>();

export function commandSpec(key: string): CommandSpec | null {
  const cached = specCache.get(key);
  if (cached) return cached;
  const help = HELP_TEXTS[key];
  if (help === undefined) return null;
  const spec = parseHelp(key, help);
  specCache.set(key, spec);
  return spec;
}

function parseHelp(key: string, help: string): CommandSpec {
  const lines = help.split("\n");
  const usage = lines[0] ?? "";
  const options: OptionSpec[] = [];
  const optStart = lines.indexOf("Options:");
  for (let i = optStart + 1; i < lines.length; i++) {
    const line = lines[i] ?? "";
    if (line === "Commands:") break;
    const m = /^ {2}(-\S.*?)(?: {2,}.*)?$/.exec(line);
    if (m?.[1]) options.push(parseOptionDecl(m[1], false));
  }
  for (const decl of HIDDEN[key] ?? []) options.push(parseOptionDecl(decl, true));
  const args: ArgumentSpec[] = [];
  const after = usage.replace(/^Usage: sky( \S+)*? \[OPTIONS\]/, "").trim();
  for (const tok of after.split(/\s+/).filter((t) => t !== "")) {
    const variadic = tok.endsWith("...");
    const bare = tok.replace(/\.\.\.$/, "");
    const required = !bare.startsWith("[");
    const metavar = bare.replace(/^\[|\]$/g, "");
    args.push({ dest: metavar.toLowerCase(), metavar, required, variadic });
  }
  // `sky exec` has both a CLUSTER argument and a hidden --cluster option (dest cluster_option).
  for (const o of options) if (args.some((a) => a.dest === o.dest)) o.dest = `${o.dest}_option`;
  return { key, usage, options, args };
}

function parseOptionDecl(decl: string, hidden: boolean): OptionSpec {
  // "-d, --detach-run / -no-d", "-c, --cluster TEXT", "--disk-tier [low|...]", "--use-spot / --no-use-spot"
  let metavar: string | null = null;
  let names = decl;
  const mv = /^(.*?[^,]) (\[[^\]]*\]|[A-Z_][A-Z0-9_-]*)$/.exec(decl);
  if (mv?.[1] && mv[2] && !decl.includes(" / ")) {
    names = mv[1];
    metavar = mv[2];
  }
  const [onPart, offPart] = names.split(" / ");
  const on = (onPart ?? "").split(", ").map((s) => s.trim());
  const off = offPart ? offPart.split(", ").map((s) => s.trim()) : [];
  const long = on.find((n) => n.startsWith("--")) ?? on[0] ?? "";
  const dest = long.replace(/^-+/, "").replace(/-/g, "_");
  const declared =
    hidden || SHORT_FIRST.has(dest) ? on : [...on.filter((n) => n.startsWith("--")), ...on.filter((n) => !n.startsWith("--"))];
  let type: ParamType = { kind: "string" };
  if (metavar === "INTEGER") type = { kind: "int" };
  else if (metavar === "INT-OR-NONE") type = { kind: "int-or-none" };
  else if (metavar === "DIRECTORY") type = { kind: "dir" };
  else if (metavar === "DOTENV_VALUES") type = { kind: "dotenv" };
  else if (metavar === "_PARSE_ENV_VAR") type = { kind: "env", what: "env" };
  else if (metavar === "_PARSE_SECRET_VAR") type = { kind: "env", what: "secret" };
  else if (metavar?.startsWith("[")) {
    type = { kind: "choice", choices: metavar.slice(1, -1).split("|"), caseSensitive: !CASE_INSENSITIVE.has(dest) };
  }
  return {
    dest,
    names: declared,
    secondary: off,
    flag: metavar === null,
    multiple: MULTIPLE.has(dest),
    type,
    help: dest === "help",
  };
}

export function usageError(spec: { usage: string; key: string }, message: string): UsageError {
  const path = spec.key === "" ? "sky" : `sky ${spec.key}`;
  return new UsageError(message, spec.usage, `Try '${path} -h' for help.`);
}

export interface ParseOutcome {
  help: boolean;
  parsed: Parsed;
}

// click's OptionParser.parse_args + Command.parse_args + parameter processing.
export function parseCommand(spec: CommandSpec, argv: string[], env: NodeJS.ProcessEnv): ParseOutcome {
  const longOpts = new Map<string, OptionSpec>();
  const shortOpts = new Map<string, OptionSpec>();
  const prefixes = new Set<string>();
  for (const o of spec.options) {
    for (const n of [...o.names, ...o.secondary]) {
      const m = /^(-+)(.*)$/.exec(n);
      const prefix = m?.[1] ?? "-";
      prefixes.add(prefix);
      if (prefix.length === 1 && (m?.[2] ?? "").length === 1) shortOpts.set(n, o);
      else longOpts.set(n, o);
    }
  }
  const raw = new Map<string, { value: string | boolean; name: string }[]>();
  const order: string[] = [];
  const record = (o: OptionSpec, name: string, value: string | boolean) => {
    const list = raw.get(o.dest) ?? [];
    list.push({ value, name });
    raw.set(o.dest, list);
    if (!order.includes(o.dest)) order.push(o.dest);
  };
  const rargs = [...argv];
  const largs: string[] = [];
  const fail = (msg: string) => usageError(spec, msg);
  const takeValue = (name: string): string => {
    const v = rargs.shift();
    // click raises these BadOptionUsage errors without a context: no usage line, no hint.
    if (v === undefined) throw new UsageError(`Option ${pyStr(name)} requires an argument.`, null, null);
    return v;
  };
  const matchLong = (opt: string, explicit: string | null): void => {
    const o = longOpts.get(opt);
    if (!o) {
      const poss = getCloseMatches(opt, longOpts.keys());
      let msg = `No such option: ${opt}`;
      if (poss.length === 1) msg += ` Did you mean ${poss[0]}?`;
      else if (poss.length > 1) msg += ` (Possible options: ${[...poss].sort().join(", ")})`;
      throw new NoSuchOption(fail(msg));
    }
    if (!o.flag) {
      if (explicit !== null) rargs.unshift(explicit);
      record(o, opt, takeValue(opt));
    } else if (explicit !== null) {
      throw new UsageError(`Option ${pyStr(opt)} does not take a value.`, null, null);
    } else {
      record(o, opt, !o.secondary.includes(opt));
    }
  };
  const matchShort = (arg: string): void => {
    const prefix = arg[0] ?? "-";
    for (let i = 1; i < arg.length; i++) {
      const opt = prefix + (arg[i] ?? "");
      const o = shortOpts.get(opt);
      if (!o) throw fail(`No such option: ${opt}`);
      if (!o.flag) {
        if (i + 1 < arg.length) rargs.unshift(arg.slice(i + 1));
        record(o, opt, takeValue(opt));
        return;
      }
      record(o, opt, !o.secondary.includes(opt));
    }
  };
  while (rargs.length > 0) {
    const arg = rargs.shift() as string;
    if (arg === "--") break;
    if (prefixes.has(arg[0] ?? "") && arg.length > 1) {
      const eq = arg.indexOf("=");
      const longOpt = eq >= 0 ? arg.slice(0, eq) : arg;
      const explicit = eq >= 0 ? arg.slice(eq + 1) : null;
      try {
        matchLong(longOpt, explicit);
      } catch (e) {
        if (!(e instanceof NoSuchOption)) throw e;
        if (!prefixes.has(arg.slice(0, 2))) {
          matchShort(arg);
          continue;
        }
        throw e.inner;
      }
    } else {
      largs.push(arg);
    }
  }
  const positional = [...largs, ...rargs];

  // Eager --help wins over every later error (missing arguments, bad values).
  if (raw.has("help")) return { help: true, parsed: new Parsed(new Map(), new Set()) };

  const values = new Map<string, OptValue>();
  const present = new Set<string>(order);
  // Arguments (click._unpack_args for one optional/required single arg followed by one variadic).
  const argVals = new Map<string, string | string[] | null>();
  const rest = [...positional];
  for (const a of spec.args) {
    if (a.variadic) {
      const take = Math.max(0, rest.length - spec.args.slice(spec.args.indexOf(a) + 1).length);
      argVals.set(a.dest, rest.splice(0, take));
    } else {
      argVals.set(a.dest, rest.length > 0 ? (rest.shift() as string) : null);
    }
  }
  if (rest.length > 0) {
    throw fail(`Got unexpected extra argument${rest.length > 1 ? "s" : ""} (${rest.join(" ")})`);
  }
  // Processing order: invoked options in order of appearance, then the rest in declaration order.
  const params: (OptionSpec | ArgumentSpec)[] = [
    ...order.map((d) => spec.options.find((o) => o.dest === d) as OptionSpec),
    ...spec.options.filter((o) => !order.includes(o.dest)),
    ...spec.args,
  ];
  for (const p of params) {
    if ("metavar" in p) {
      const v = argVals.get(p.dest) ?? null;
      if (p.required && (v === null || (Array.isArray(v) && v.length === 0))) {
        throw fail(`Missing argument ${pyStr(p.metavar)}.`);
      }
      values.set(p.dest, v);
      continue;
    }
    const given = raw.get(p.dest) ?? [];
    if (p.flag) {
      const last = given[given.length - 1];
      values.set(p.dest, last === undefined ? (p.secondary.length > 0 ? null : false) : (last.value as boolean));
      continue;
    }
    const converted = given.map((g) => convert(spec, p, String(g.value), env));
    if (p.multiple) {
      if (p.type.kind === "env") values.set(p.dest, converted as [string, string][]);
      else values.set(p.dest, converted as string[]);
    } else {
      const last = converted[converted.length - 1];
      values.set(p.dest, last === undefined ? null : (last as OptValue));
    }
  }
  return { help: false, parsed: new Parsed(values, present) };
}

class NoSuchOption extends Error {
  constructor(readonly inner: UsageError) {
    super(inner.message);
  }
}

function convert(spec: CommandSpec, o: OptionSpec, value: string, env: NodeJS.ProcessEnv): OptValue | [string, string] {
  const bad = (msg: string) => usageError(spec, `Invalid value for ${o.names.map(pyStr).join(" / ")}: ${msg}`);
  switch (o.type.kind) {
    case "string":
      return value;
    case "int":
    case "int-or-none": {
      if (o.type.kind === "int-or-none" && ["none", "all"].includes(value.toLowerCase())) return null;
      if (!/^\s*[+-]?\d+(_\d+)*\s*$/.test(value)) throw bad(`${pyStr(value)} is not a valid integer.`);
      return Number(value.replace(/_/g, "").trim());
    }
    case "choice": {
      const t = o.type;
      const hit = t.choices.find((c) => (t.caseSensitive ? c === value : c.toLowerCase() === value.toLowerCase()));
      if (hit === undefined) {
        const cs = t.choices.map(pyStr).join(", ");
        throw bad(t.choices.length === 1 ? `${pyStr(value)} is not ${cs}.` : `${pyStr(value)} is not one of ${cs}.`);
      }
      return hit;
    }
    case "dir": {
      if (!existsSync(value)) throw bad(`Directory ${pyStr(value)} does not exist.`);
      if (!statSync(value).isDirectory()) throw bad(`Directory ${pyStr(value)} is a file.`);
      return value;
    }
    case "dotenv":
      return parseDotenv(value);
    case "env": {
      // flags._parse_env_var / _parse_secret_var: a bare KEY reads the local environment.
      const eq = value.indexOf("=");
      if (eq < 0) {
        const v = env[value];
        if (v === undefined) throw usageError(spec, `${value} is not set in local environment.`);
        return [value, v];
      }
      return [value.slice(0, eq), value.slice(eq + 1)];
    }
  }
}

// python-dotenv's dotenv_values for the common cases (a missing file gives an empty dict).
function parseDotenv(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return {};
  }
  const outv: Record<string, string> = {};
  for (const rawLine of text.split("\n")) {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)$/.exec(line);
    if (!m?.[1]) continue;
    let v = m[2] ?? "";
    if (/^'.*'$/.test(v)) v = v.slice(1, -1);
    else if (/^".*"$/.test(v)) v = v.slice(1, -1).replace(/\\n/g, "\n").replace(/\\"/g, '"');
    else v = v.replace(/\s+#.*$/, "");
    outv[m[1]] = v;
  }
  return outv;
}
