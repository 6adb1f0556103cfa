// The dependencies of every use case, built once per run in main.ts (tests build their own). Heavy
// adapters (execa, gRPC, ssh2) load on first use, so `--help` never pays for them.
import { homedir } from "node:os";
import { createScheduler, type Scheduler } from "../adapters/scheduler.js";
import type { Sky } from "../adapters/sky.js";
import { StateStore } from "../adapters/state-store.js";
import type { TpuApi } from "../adapters/tpu-api.js";
import { loadTemplate } from "../adapters/templates.js";
import { postJson, type PostResult } from "../adapters/webhook.js";
import type { Config } from "../core/config.js";
import type { Template } from "../core/plan.js";

export interface Deps {
  env: NodeJS.ProcessEnv;
  /** The user's home (SkyPilot's ~/.sky lives there). */
  home: string;
  now(): Date;
  store: StateStore;
  sky(): Promise<Sky>;
  /** The Cloud TPU API client; created once, closed by close(). */
  tpuApi(): Promise<TpuApi>;
  /** The sky.yaml template of a config: the user's, or the built-in one for its generation. */
  template(config: Config): Template;
  /** POSTs a JSON body (webhooks); never throws, the result says what happened. */
  post(url: string, body: unknown): Promise<PostResult>;
  /** crontab, systemctl and the systemd unit files, for `schedule`. */
  scheduler(): Scheduler;
  /** The running tpu-deploy: node and the real path of its bin script (what schedule installs); none when unknown. */
  self: { node: string; bin: string } | undefined;
  close(): Promise<void>;
}

export interface DepsOptions {
  now?: () => Date;
  self?: { node: string; bin: string } | undefined;
}

export function makeDeps(env: NodeJS.ProcessEnv, opts: DepsOptions = {}): Deps {
  let sky: Promise<Sky> | undefined;
  let api: Promise<TpuApi> | undefined;
  let scheduler: Scheduler | undefined;
  return {
    env,
    home: env.HOME || homedir(),
    now: opts.now ?? (() => new Date()),
    store: new StateStore(env),
    sky: () => {
      sky ??= import("../adapters/sky.js").then((m) => m.createSky(env));
      return sky;
    },
    tpuApi: () => {
      api ??= import("../adapters/tpu-api.js").then((m) => m.createTpuApi(env));
      return api;
    },
    template: (config) => loadTemplate(config.launch.template, config.tpu.generation),
    post: (url, body) => postJson(url, body),
    scheduler: () => {
      scheduler ??= createScheduler(env);
      return scheduler;
    },
    self: opts.self,
    close: async () => {
      if (!api) return;
      try {
        await (await api).close();
      } catch {
        // closing a client that never connected can reject (docs/upstream/tpu.md P8)
      }
    },
  };
}
