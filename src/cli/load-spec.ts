// Reads the config file (if any), merges the flags over it, and resolves the config; reads the template.
import { existsSync, readFileSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { type Document, parseDocument } from "yaml";
import { type Config, type ConfigSource, resolveConfig } from "../core/config.js";
import { ConfigError, UsageError } from "../errors.js";
import { flagName, flagsToConfig, type SpecFlags } from "./config-flags.js";
import type { Io } from "./io.js";

export const DEFAULT_CONFIG_FILE = "tpu-deploy.yaml";

function expandHome(p: string, env: NodeJS.ProcessEnv): string {
  return p.startsWith("~/") && env.HOME ? join(env.HOME, p.slice(2)) : p;
}

export function readConfigFile(flags: SpecFlags, io: Io): ConfigSource | undefined {
  const explicit = flags.config !== undefined;
  const path = resolve(io.cwd, expandHome(flags.config ?? DEFAULT_CONFIG_FILE, io.env));
  if (!existsSync(path)) {
    if (explicit) throw new UsageError(`config file ${flags.config} does not exist`, { hint: "check the path given to -c/--config" });
    return undefined;
  }
  const label = flags.config ?? DEFAULT_CONFIG_FILE;
  const doc = parseDocument(readFileSync(path, "utf8"));
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => ({ path: label, message: e.message.split("\n")[0] ?? e.message })));
  }
  return { label, keyName: (p) => p, data: documentData(doc, label) ?? {} };
}

/** Aliases are expanded here, not by parseDocument: a "billion laughs" file fails only now, past yaml's maxAliasCount. */
function documentData(doc: Document, label: string): unknown {
  try {
    return doc.toJS();
  } catch (err) {
    if (!(err instanceof ReferenceError)) throw err;
    throw new ConfigError([{ path: label, message: `its aliases (*name) cannot be expanded: ${err.message}` }], {
      hint: "write the repeated values out instead of referring to an anchor (&name) this often",
      cause: err,
    });
  }
}

export function loadSpec(flags: SpecFlags, io: Io): Config {
  const sources: ConfigSource[] = [];
  const file = readConfigFile(flags, io);
  if (file) sources.push(file);
  sources.push({ label: "flags", keyName: flagName, data: flagsToConfig(flags) });
  const result = resolveConfig(sources, io.env);
  if (!result.ok) throw new ConfigError(result.issues, result.conflict ? { code: "config_conflict" } : {});
  // Relative paths in the file are relative to the file's directory; in flags, to the cwd.
  const base = file ? dirname(resolve(io.cwd, flags.config ?? DEFAULT_CONFIG_FILE)) : io.cwd;
  const cfg = result.config;
  if (cfg.launch.template) {
    const fromFlag = flags.template !== undefined;
    cfg.launch.template = absolute(expandHome(cfg.launch.template, io.env), fromFlag ? io.cwd : base);
  }
  if (cfg.server.secretsFile) {
    const fromFlag = flags.secretsFile !== undefined;
    cfg.server.secretsFile = absolute(expandHome(cfg.server.secretsFile, io.env), fromFlag ? io.cwd : base);
  }
  return cfg;
}

function absolute(p: string, base: string): string {
  return isAbsolute(p) ? p : resolve(base, p);
}
