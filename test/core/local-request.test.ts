import { describe, expect, it } from "vitest";
import { checkLocalRequest, hostWithoutPort, isLocalHost, isLocalOrigin, type RequestHead } from "../../src/core/local-request.js";

const head = (over: Partial<RequestHead>): RequestHead => ({
  method: "GET",
  host: "127.0.0.1:8001",
  origin: undefined,
  accessControlRequestMethod: undefined,
  secFetchSite: undefined,
  ...over,
});

describe("Host, compared without its port", () => {
  it.each([
    ["localhost", "localhost"],
    ["localhost:8085", "localhost"],
    ["LocalHost:8085", "localhost"],
    ["127.0.0.1:30000", "127.0.0.1"],
    // kubectl's SplitHostPort yields ::1 here, which its own ^\[::1\]$ then rejects (kubernetes#77496).
    ["[::1]:8001", "[::1]"],
    ["[::1]", "[::1]"],
    ["evil.com:80", "evil.com"],
  ])("%s → %s", (header, want) => {
    expect(hostWithoutPort(header)).toBe(want);
  });

  it.each(["", "::1", "localhost:", "localhost:80:80", "localhost:http", "user@localhost", "localhost/x", "[::1]x", "localhost :80"])(
    "%j is not host[:port]",
    (header) => {
      expect(hostWithoutPort(header)).toBeUndefined();
    },
  );

  it.each([
    ["localhost", true],
    ["localhost:8001", true],
    ["127.0.0.1", true],
    ["127.0.0.1:8001", true],
    ["[::1]:8001", true],
    ["[::1]", true],
    ["evil.com", false],
    ["localhost.evil.com", false],
    ["127.0.0.1.nip.io:8001", false],
    ["127a0b0c1", false],
    ["127.0.0.2", false],
    ["0.0.0.0:8001", false],
    ["[::ffff:127.0.0.1]:8001", false],
    ["::1", false],
  ])("Host %s local: %s", (header, want) => {
    expect(isLocalHost(header)).toBe(want);
  });

  it("no Host at all is not local", () => {
    expect(isLocalHost(undefined)).toBe(false);
  });
});

describe("Origin", () => {
  it.each([
    ["http://localhost:3000", true],
    ["http://127.0.0.1:8001", true],
    ["https://localhost", true],
    ["http://[::1]:8001", true],
    ["null", false],
    ["http://evil.com", false],
    ["http://localhost.evil.com", false],
    ["file://", false],
    ["chrome-extension://abcdefgh", false],
    ["http://localhost:3000, http://evil.com", false],
    ["http://localhost/path", false],
  ])("%s local: %s", (origin, want) => {
    expect(isLocalOrigin(origin)).toBe(want);
  });
});

describe("checkLocalRequest", () => {
  it("answers a local client (curl, an SDK): local Host, no Origin", () => {
    expect(checkLocalRequest(head({}))).toEqual({ ok: true });
    expect(checkLocalRequest(head({ method: "POST", host: "localhost:8001" }))).toEqual({ ok: true });
    expect(checkLocalRequest(head({ method: "OPTIONS" }))).toEqual({ ok: true });
  });

  it("answers a page served from this machine", () => {
    expect(checkLocalRequest(head({ origin: "http://localhost:3000", secFetchSite: "cross-site" }))).toEqual({ ok: true });
    expect(checkLocalRequest(head({ secFetchSite: "same-origin" }))).toEqual({ ok: true });
    expect(checkLocalRequest(head({ secFetchSite: "none" }))).toEqual({ ok: true });
  });

  it("refuses a foreign or missing Host (DNS rebinding)", () => {
    expect(checkLocalRequest(head({ host: "evil.com:8001" }))).toMatchObject({ ok: false, reason: expect.stringMatching(/Host/) });
    expect(checkLocalRequest(head({ host: undefined }))).toMatchObject({ ok: false });
  });

  it("refuses a foreign Origin behind a local Host (a web page's fetch)", () => {
    expect(checkLocalRequest(head({ origin: "https://evil.com" }))).toMatchObject({ ok: false, reason: expect.stringMatching(/Origin/) });
    expect(checkLocalRequest(head({ origin: "null" }))).toMatchObject({ ok: false });
  });

  it("refuses every browser preflight, even from a local page", () => {
    const preflight = head({ method: "OPTIONS", accessControlRequestMethod: "POST" });
    expect(checkLocalRequest(preflight)).toMatchObject({ ok: false, reason: expect.stringMatching(/preflight/) });
    expect(checkLocalRequest({ ...preflight, origin: "http://localhost:3000" })).toMatchObject({ ok: false });
  });

  it("refuses what another site's <img> or form sends without an Origin", () => {
    expect(checkLocalRequest(head({ secFetchSite: "cross-site" }))).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/another site/),
    });
  });
});
