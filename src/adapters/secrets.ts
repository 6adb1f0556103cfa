// Resolves secret values at run time: the environment first, then server.secretsFile (which must be 0600).
// Values live only in memory and on the way to a host's 0600 file; they are never logged or stored.
import { readFileSync, statSync } from "node:fs";
import type { Config } from "../core/config.js";
import { MIN_SECRET_LENGTH } from "../core/redact.js";
import { ConfigError } from "../errors.js";

/** Parses KEY=value lines (optional `export `, # comments, single or double quotes). */
export function parseEnvFile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "").trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let value = m[2] ?? "";
    // As python-dotenv (SkyPilot's --secret-file) reads it: a comment may follow the closing quote, and
    // escapes are decoded in one pass, so `\\n` is a backslash and an n (JSON keys), not a newline.
    const quoted = /^'([^']*)'\s*(?:#.*)?$|^"((?:[^"\\]|\\.)*)"\s*(?:#.*)?$/.exec(value);
    if (quoted?.[1] !== undefined) value = quoted[1];
    else if (quoted?.[2] !== undefined) value = quoted[2].replace(/\\([\\"n])/g, (_, c: string) => (c === "n" ? "\n" : c));
    else value = value.replace(/\s+#.*$/, "");
    out.set(m[1] ?? "", value);
  }
  return out;
}

export function resolveSecrets(config: Config, env: NodeJS.ProcessEnv): Map<string, string> {
  const names = config.server.secrets;
  const values = new Map<string, string>();
  let file: Map<string, string> | undefined;
  const path = config.server.secretsFile;
  const problems: { path: string; message: string }[] = [];
  const loadFile = () => {
    if (file || !path) return file;
    try {
      const mode = statSync(path).mode & 0o777;
      if ((mode & 0o077) !== 0) {
        problems.push({
          path: "server.secretsFile",
          message: `${path} is mode ${mode.toString(8).padStart(4, "0")}; secrets files must be 0600 (chmod 600 ${path})`,
        });
        file = new Map();
        return file;
      }
      file = parseEnvFile(readFileSync(path, "utf8"));
    } catch (err) {
      problems.push({ path: "server.secretsFile", message: `cannot read ${path}: ${(err as Error).message}` });
      file = new Map();
    }
    return file;
  };
  for (const name of names) {
    const fromEnv = env[name];
    if (fromEnv !== undefined && fromEnv !== "") {
      values.set(name, fromEnv);
      continue;
    }
    const fromFile = loadFile()?.get(name);
    if (fromFile !== undefined && fromFile !== "") values.set(name, fromFile);
  }
  // A short value cannot be kept out of logs and answers: replacing it would mangle ordinary text, and
  // leaving it would leak it. Refused before anything is launched.
  let short = 0;
  for (const [n, v] of values) {
    if ([...v].length < MIN_SECRET_LENGTH) {
      short++;
      problems.push({
        path: "server.secrets",
        message: `secret ${n} is shorter than ${MIN_SECRET_LENGTH} characters: tpu-deploy cannot keep so short a value out of logs and answers; use a longer one`,
      });
    }
  }
  const missing = names.filter((n) => !values.has(n));
  if (missing.length > 0 || problems.length > 0) {
    for (const n of missing) {
      problems.push({
        path: "server.secrets",
        message: `secret ${n} has no value: export ${n}=... or put ${n}=... in ${path ?? "a 0600 file given as server.secretsFile / --secrets-file"}`,
      });
    }
    throw new ConfigError(problems, { code: short === problems.length ? "config_invalid" : "secret_missing" });
  }
  return values;
}

/**
 * Every secret of the config that has a value here (environment, then the secrets file), the API key's
 * included; names without one are left out, and nothing throws. For keeping values out of what tpu-deploy
 * shows (logs, proxy answers), where a secret missing here is no reason to refuse.
 */
export function knownSecrets(config: Config, env: NodeJS.ProcessEnv): Map<string, string> {
  const keyName = config.server.apiKeySecret;
  const names = [...new Set([...(keyName ? [keyName] : []), ...config.server.secrets])];
  let file: Map<string, string> | undefined;
  const fromFile = (name: string): string | undefined => {
    const path = config.server.secretsFile;
    if (!path) return undefined;
    if (file === undefined) {
      try {
        file = (statSync(path).mode & 0o077) === 0 ? parseEnvFile(readFileSync(path, "utf8")) : new Map();
      } catch {
        file = new Map();
      }
    }
    return file.get(name);
  };
  const out = new Map<string, string>();
  for (const n of names) {
    const v = env[n] || fromFile(n);
    if (v) out.set(n, v);
  }
  return out;
}

/**
 * The known secret values long enough to redact safely (shorter ones are refused before any launch), for
 * redacting remote text where it enters tpu-deploy: logs, log tails quoted in errors.
 */
export function redactableSecrets(config: Config, env: NodeJS.ProcessEnv): string[] {
  return [...knownSecrets(config, env).values()].filter((v) => [...v].length >= MIN_SECRET_LENGTH);
}
