// Log tails quoted in error messages are redacted where they enter tpu-deploy, whatever the host's log holds
// (a log written before the host-side filter, or by a program that bypassed it).
import { describe, expect, it } from "vitest";
import type { HostSession } from "../../src/adapters/ssh/session.js";
import type { AppContext } from "../../src/app/context.js";
import { lastLogLines } from "../../src/app/start.js";
import { resolveConfig } from "../../src/core/config.js";
import type { HostRecord } from "../../src/core/state.js";

const KEY = "sk-live-0123456789abcdef";
const TOKEN = "hf_abcdefghijklmnop";

describe("lastLogLines", () => {
  it("redacts every known secret value and any api_key field the server printed", async () => {
    const r = resolveConfig(
      [
        {
          label: "tpu-deploy.yaml",
          keyName: (p) => p,
          data: { name: "tail", server: { secrets: ["HF_TOKEN"], apiKeySecret: "SGLANG_API_KEY" } },
        },
      ],
      {},
    );
    if (!r.ok) throw new Error(JSON.stringify(r.issues));
    const log = `server_args=ServerArgs(api_key='${KEY}', model_path='m')\ndownloading with token ${TOKEN}\nRuntimeError: boom\n`;
    const session = { exec: async () => ({ stdout: log, stderr: "", code: 0 }) } as unknown as HostSession;
    const host = { sshAlias: "tail", rank: 0 } as HostRecord;
    const ctx = { env: { SGLANG_API_KEY: KEY, HF_TOKEN: TOKEN } } as unknown as AppContext;
    const out = await lastLogLines(ctx, new Map([["tail", session]]), r.config, host, 3);
    expect(out).not.toContain(KEY);
    expect(out).not.toContain(TOKEN);
    expect(out).toContain("RuntimeError: boom");
    expect(out).toContain("[REDACTED]");
  });
});
