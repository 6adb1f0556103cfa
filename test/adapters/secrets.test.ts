import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseEnvFile, resolveSecrets } from "../../src/adapters/secrets.js";
import { type Config, resolveConfig } from "../../src/core/config.js";
import { ConfigError } from "../../src/errors.js";

const dir = mkdtempSync(join(tmpdir(), "tpd-secrets-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
/** A real secrets file with the given mode. */
function secretsFile(text: string, mode = 0o600): string {
  const path = join(dir, `secrets-${++files}.env`);
  writeFileSync(path, text, { mode });
  chmodSync(path, mode); // the umask must not decide the mode under test
  return path;
}

function config(server: { secrets: string[]; secretsFile?: string; apiKeySecret?: string }): Config {
  const r = resolveConfig([{ label: "tpu-deploy.yaml", keyName: (p) => p, data: { server } }], {});
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.config;
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("resolveSecrets", () => {
  it("takes the environment over the file, and the file for what the environment lacks", () => {
    const path = secretsFile("HF_TOKEN=hf_from_file\nSGLANG_API_KEY=sk-from-file\n");
    const values = resolveSecrets(config({ secrets: ["HF_TOKEN"], apiKeySecret: "SGLANG_API_KEY", secretsFile: path }), {
      HF_TOKEN: "hf_from_env",
    });
    expect([...values]).toEqual([
      ["HF_TOKEN", "hf_from_env"],
      ["SGLANG_API_KEY", "sk-from-file"],
    ]);
  });

  it("treats an empty environment variable as unset", () => {
    const path = secretsFile("HF_TOKEN=hf_from_file\n");
    expect(resolveSecrets(config({ secrets: ["HF_TOKEN"], secretsFile: path }), { HF_TOKEN: "" }).get("HF_TOKEN")).toBe("hf_from_file");
  });

  it("does not read the file when the environment has every secret (its mode does not matter then)", () => {
    const path = secretsFile("HF_TOKEN=x\n", 0o644);
    expect(resolveSecrets(config({ secrets: ["HF_TOKEN"], secretsFile: path }), { HF_TOKEN: "hf_env_12345" }).get("HF_TOKEN")).toBe(
      "hf_env_12345",
    );
  });

  it.each(["0644", "0640", "0604", "0660"])("refuses a file of mode %s with a chmod hint, and never shows its values", (octal) => {
    const mode = Number.parseInt(octal, 8);
    const path = secretsFile("HF_TOKEN=hf_must_not_leak\n", mode);
    const err = configError(() => resolveSecrets(config({ secrets: ["HF_TOKEN"], secretsFile: path }), {}));
    expect(err.code).toBe("secret_missing");
    expect(err.exitCode).toBe(2);
    expect(err.issues).toContainEqual({
      path: "server.secretsFile",
      message: `${path} is mode ${octal}; secrets files must be 0600 (chmod 600 ${path})`,
    });
    expect(err.message).not.toContain("hf_must_not_leak");
  });

  it("accepts 0400", () => {
    const path = secretsFile("HF_TOKEN=hf_read_only\n", 0o400);
    expect(resolveSecrets(config({ secrets: ["HF_TOKEN"], secretsFile: path }), {}).get("HF_TOKEN")).toBe("hf_read_only");
  });

  it("lists every missing secret in one error", () => {
    const path = secretsFile("HF_TOKEN=hf_x_123456\n# WANDB_API_KEY=commented out\nEMPTY=\n");
    const err = configError(() =>
      resolveSecrets(config({ secrets: ["HF_TOKEN", "WANDB_API_KEY", "EMPTY"], apiKeySecret: "SGLANG_API_KEY", secretsFile: path }), {}),
    );
    expect(err.code).toBe("secret_missing");
    expect(err.issues.map((i) => [i.path, i.message])).toEqual([
      ["server.secrets", `secret WANDB_API_KEY has no value: export WANDB_API_KEY=... or put WANDB_API_KEY=... in ${path}`],
      ["server.secrets", `secret EMPTY has no value: export EMPTY=... or put EMPTY=... in ${path}`],
      ["server.secrets", `secret SGLANG_API_KEY has no value: export SGLANG_API_KEY=... or put SGLANG_API_KEY=... in ${path}`],
    ]);
    expect(err.message).not.toContain("hf_x_123456");
  });

  it("refuses a value shorter than 8 characters (it could not be kept out of logs), never printing it", () => {
    const err = configError(() =>
      resolveSecrets(config({ secrets: ["HF_TOKEN"], apiKeySecret: "SGLANG_API_KEY" }), {
        HF_TOKEN: "hf_1234567",
        SGLANG_API_KEY: "abc123",
      }),
    );
    expect(err.code).toBe("config_invalid");
    expect(err.issues).toEqual([
      { path: "server.secrets", message: expect.stringMatching(/^secret SGLANG_API_KEY is shorter than 8 characters/) },
    ]);
    expect(err.message).not.toContain("abc123");
  });

  it("without a file, says where a value could come from", () => {
    const err = configError(() => resolveSecrets(config({ secrets: ["HF_TOKEN"] }), {}));
    expect(err.issues).toEqual([
      {
        path: "server.secrets",
        message:
          "secret HF_TOKEN has no value: export HF_TOKEN=... or put HF_TOKEN=... in a 0600 file given as server.secretsFile / --secrets-file",
      },
    ]);
  });

  it("reports a file that cannot be read next to the secrets it would have held", () => {
    const path = join(dir, "does-not-exist.env");
    const err = configError(() => resolveSecrets(config({ secrets: ["HF_TOKEN"], secretsFile: path }), {}));
    expect(err.code).toBe("secret_missing");
    expect(err.issues.map((i) => i.path)).toEqual(["server.secretsFile", "server.secrets"]);
    expect(err.issues[0]?.message).toMatch(new RegExp(`^cannot read ${path}: ENOENT`));
  });

  it("needs no file and no environment when there are no secrets", () => {
    expect(resolveSecrets(config({ secrets: [] }), {}).size).toBe(0);
  });
});

describe("parseEnvFile", () => {
  it.each<[string, string, Record<string, string>]>([
    ["plain", "HF_TOKEN=hf_abc\n", { HF_TOKEN: "hf_abc" }],
    ["export prefix", "export HF_TOKEN=hf_abc\nexport\tB=2\n", { HF_TOKEN: "hf_abc", B: "2" }],
    ["spaces around =", "A = 1\n  B=2  \n", { A: "1", B: "2" }],
    [
      "= inside the value",
      "DSN=postgres://u:p@h/db?sslmode=require&x=y\nB64=YWJj==\n",
      { DSN: "postgres://u:p@h/db?sslmode=require&x=y", B64: "YWJj==" },
    ],
    ["single quotes are literal", "A='a $HOME \\n \"q\" # not a comment'\n", { A: 'a $HOME \\n "q" # not a comment' }],
    ['double quotes: \\n, \\" and \\\\ escapes', 'A="line1\\nline2 \\"q\\" back\\\\slash"\n', { A: 'line1\nline2 "q" back\\slash' }],
    [
      "an escaped backslash before n stays a backslash and n",
      'JSON="{\\"key\\":\\"-----BEGIN-----\\\\nMIIE\\"}"\n',
      { JSON: '{"key":"-----BEGIN-----\\nMIIE"}' },
    ],
    ["# in a double-quoted value", 'A="abc # def"\n', { A: "abc # def" }],
    ["full-line and inline comments", "# a comment\n  # indented\nA=1 # why\nB=x#y\n", { A: "1", B: "x#y" }],
    ["a comment after a quoted value", "A=\"hf abc\" # my token\nB='x y'   # other\n", { A: "hf abc", B: "x y" }],
    ["CRLF line ends", "A=1\r\nexport B='two'\r\nC=\"3\"\r\n# c\r\n", { A: "1", B: "two", C: "3" }],
    ["empty values", "A=\nB=''\nC=\"\"\n", { A: "", B: "", C: "" }],
    ["lines that are not assignments are skipped", "not a line\n1BAD=x\nGOOD=y\n=nokey\n", { GOOD: "y" }],
    ["the last of repeated keys wins", "A=1\nA=2\n", { A: "2" }],
    ["no trailing newline", "A=1", { A: "1" }],
  ])("%s", (_name, text, want) => {
    expect(Object.fromEntries(parseEnvFile(text))).toEqual(want);
  });
});
