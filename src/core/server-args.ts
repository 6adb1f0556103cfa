// sglang-jax flags that tpu-deploy owns, and the check that user args do not repeat them.
// argparse (allow_abbrev on) accepts any unambiguous prefix, and `--flag=value`; we refuse both forms.

/** Flags the orchestrator sets on every rank (sglang-jax.md §1), with their argparse aliases. */
export const OWNED_FLAGS: Record<string, string> = {
  "--model-path": "model.path / --model",
  "--model": "model.path / --model",
  "--nnodes": "tpu.nodes / --nodes",
  "--node-rank": "assigned per host from its TPU worker number",
  "--dist-init-addr": "rank 0's internal IPv4 and server.distPort / --dist-port",
  "--tp-size": "derived (global JAX device count); server.tpSize / --tp-size",
  "--tensor-parallel-size": "derived (global JAX device count); server.tpSize / --tp-size",
  "--host": "always 0.0.0.0 so the other ranks and the tunnel can reach it",
  "--port": "server.port / --port",
  "--api-key": "server.apiKeySecret (the value must stay out of argv and files)",
};

/** Flags of sglang-jax's ServerArgs that are not owned: an exact match of one of these is fine. */
export const KNOWN_SERVER_FLAGS = [
  "--served-model-name",
  "--tokenizer-path",
  "--data-parallel-size",
  "--dp-size",
  "--ep-size",
  "--dist-timeout",
  "--device",
  "--mem-fraction-static",
  "--page-size",
  "--watchdog-timeout",
  "--skip-server-warmup",
  "--disable-precompile",
  "--download-dir",
  "--trust-remote-code",
  "--random-seed",
  "--attention-backend",
  "--log-level",
  "--enable-metrics",
  "--context-length",
  "--chunked-prefill-size",
  "--max-running-requests",
  "--max-prefill-tokens",
  "--precompile-token-paddings",
  "--precompile-bs-paddings",
  "--dtype",
  "--quantization",
  "--load-format",
];

/**
 * Flags sglang-jax accepts and then ignores: passing one changes nothing, so up says so. `--dist-timeout` is
 * parsed in server_args.py and read nowhere else (docs/upstream/sglang-jax.md §1); the rendezvous waits
 * JAX's own initialization_timeout (300 s) whatever it says.
 */
export const IGNORED_SERVER_FLAGS: Record<string, string> = {
  "--dist-timeout":
    "sglang-jax parses --dist-timeout but never uses it; the multi-host rendezvous waits JAX's initialization_timeout (300 s) regardless, and server.readyTimeout bounds how long up waits",
};

export function ignoredFlagWarnings(args: readonly string[]): string[] {
  return args.flatMap((arg) => {
    const why = IGNORED_SERVER_FLAGS[arg.split("=", 1)[0] ?? arg];
    return why ? [`server.args ${arg}: ${why}`] : [];
  });
}

export function ownedFlagConflicts(args: readonly string[]): string[] {
  const problems: string[] = [];
  for (const arg of args) {
    if (!arg.startsWith("--") || arg === "--") continue;
    const flag = arg.split("=", 1)[0] ?? arg;
    if (KNOWN_SERVER_FLAGS.includes(flag)) continue;
    const owned = Object.keys(OWNED_FLAGS).filter((o) => o.startsWith(flag));
    if (owned.length === 0) continue;
    const exact = owned.includes(flag) ? flag : undefined;
    const target = exact ?? owned[0] ?? flag;
    const how = exact
      ? `'${arg}' sets ${target}, which tpu-deploy sets itself`
      : `'${arg}' is an abbreviation argparse would read as ${owned.join(" or ")}, which tpu-deploy sets itself`;
    problems.push(`${how}; use ${OWNED_FLAGS[target]} instead`);
  }
  return problems;
}
