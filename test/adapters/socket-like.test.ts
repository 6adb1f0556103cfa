import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { asSocketLike } from "../../src/adapters/socket-like.js";

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("asSocketLike: the socket methods node:http's agent calls on an SSH channel", () => {
  it("setTimeout emits 'timeout' once after ms, is re-armed by a new call and disarmed by 0", async () => {
    const s = asSocketLike(new PassThrough()) as PassThrough & { setTimeout(ms: number, cb?: () => void): unknown };
    let fired = 0;
    s.on("timeout", () => fired++);
    s.setTimeout(40);
    await wait(20);
    s.setTimeout(40); // re-armed: counts from now
    await wait(30);
    expect(fired).toBe(0);
    await wait(30);
    expect(fired).toBe(1);
    s.setTimeout(20);
    s.setTimeout(0);
    await wait(40);
    expect(fired).toBe(1);
    // Never recorded as socket.timeout, so the agent arms it at every return to its idle list.
    expect((s as unknown as { timeout?: number }).timeout).toBeUndefined();
  });

  it("a callback is added once by a timeout and removed by 0, as net.Socket does (no listener piles up per request)", () => {
    const s = asSocketLike(new PassThrough()) as PassThrough & { setTimeout(ms: number, cb?: () => void): unknown };
    for (let i = 0; i < 20; i++) {
      const cb = () => undefined;
      s.setTimeout(2_000, cb);
      s.setTimeout(0, cb);
    }
    expect(s.listenerCount("timeout")).toBe(0);
  });

  it("keeps a stream's own methods and adds the rest as no-ops", () => {
    const own = () => "own";
    const s = asSocketLike(Object.assign(new PassThrough(), { ref: own })) as PassThrough & Record<string, unknown>;
    expect(s.ref).toBe(own);
    for (const k of ["setKeepAlive", "setNoDelay", "unref"]) expect(typeof s[k]).toBe("function");
  });
});
