// What every command gets: where the simulated cloud lives, the user's HOME and environment.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readState } from "../state.js";
import { exc } from "./errors.js";
import type { Parsed } from "./click.js";

export interface Ctx {
  root: string;
  home: string;
  env: NodeJS.ProcessEnv;
  argv: string[];
  cwd: string;
}

export type Command = (ctx: Ctx, p: Parsed) => Promise<number>;

export function makeCtx(argv: string[]): Ctx {
  const root = process.env.TPD_SIM_ROOT ?? "";
  const home = process.env.HOME ?? "/root";
  return { root, home, env: process.env, argv, cwd: process.cwd() };
}

export function requireRoot(ctx: Ctx): void {
  if (ctx.root === "") {
    // The real client would fail to reach its API server; the fake has no cloud without a sim root.
    throw exc.runtime("TPD_SIM_ROOT is not set: this `sky` is the simulated cloud's fake and needs startSim()'s environment.");
  }
}

// The client keeps the user hash in ~/.sky/user_hash; the sim decides it (state.json userHash).
export async function syncUserHash(ctx: Ctx): Promise<string> {
  const s = await readState(ctx.root);
  const path = join(ctx.home, ".sky", "user_hash");
  let cur = "";
  try {
    cur = readFileSync(path, "utf8").trim();
  } catch {
    cur = "";
  }
  if (cur !== s.userHash) {
    mkdirSync(join(ctx.home, ".sky"), { recursive: true });
    writeFileSync(path, s.userHash);
  }
  return s.userHash;
}
