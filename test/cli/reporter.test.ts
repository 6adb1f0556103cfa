import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type Io, makeReporter } from "../../src/cli/io.js";

function stream(isTTY: boolean) {
  const chunks: string[] = [];
  return { chunks, s: { isTTY, write: (c: string) => chunks.push(c) } };
}

function io(isTTY: boolean) {
  const err = stream(isTTY);
  const out = stream(false);
  const value: Io = { stdout: out.s, stderr: err.s, env: {}, cwd: "/" };
  return { io: value, err: err.chunks, out: out.chunks };
}

describe("progress reporter", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("on a TTY: each phase is a line, then a spinner with the phase's elapsed time, cleared before other output", () => {
    const t = io(true);
    const r = makeReporter(t.io, {});
    r.phase("[1s] provisioning");
    expect(t.err.join("")).toContain("[1s] provisioning\n");
    expect(t.err.at(-1)).toMatch(/^\r\x1b\[K⠋ provisioning 0s$/);
    vi.advanceTimersByTime(2100);
    expect(t.err.at(-1)).toMatch(/^\r\x1b\[K. provisioning 2s$/);
    r.info("  sky | line");
    const joined = t.err.join("");
    expect(joined).toContain("\r\x1b[K  sky | line\n");
    r.stop();
    expect(t.err.at(-1)).toBe("\r\x1b[K");
    const n = t.err.length;
    vi.advanceTimersByTime(1000);
    expect(t.err.length).toBe(n); // no redraw after stop
    expect(t.out).toEqual([]); // progress never touches stdout
  });

  it("without a TTY: plain lines, no spinner or escape codes", () => {
    const t = io(false);
    const r = makeReporter(t.io, {});
    r.phase("[0ms] provisioning");
    vi.advanceTimersByTime(5000);
    r.info("done");
    r.stop();
    expect(t.err.join("")).toBe("[0ms] provisioning\ndone\n");
  });

  it("with --json or --quiet: no progress at all, even on a TTY (warnings still under --quiet)", () => {
    for (const flags of [{ json: true }, { quiet: true }]) {
      const t = io(true);
      const r = makeReporter(t.io, flags);
      r.phase("[0ms] provisioning");
      r.info("x");
      vi.advanceTimersByTime(1000);
      r.stop();
      r.warn("w");
      expect(t.err.join("")).toBe(flags.quiet ? "warning: w\n" : "");
    }
  });
});
