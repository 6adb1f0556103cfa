// Which requests the local proxy answers. It adds the server's API key, so a request it forwards acts as
// the user: it must come from a local client, never from a web page. Rules after kubectl proxy's Host filter
// (docs/upstream/hostkeys-sglang-facts.md §D), plus the Origin checks a Host filter cannot make. Pure.

/** Hosts the proxy answers to, compared without the port. */
export const LOCAL_HOSTS: readonly string[] = ["localhost", "127.0.0.1", "[::1]"];

export interface RequestHead {
  method: string;
  host: string | undefined;
  origin: string | undefined;
  accessControlRequestMethod: string | undefined;
  secFetchSite: string | undefined;
}

export type LocalVerdict = { ok: true } | { ok: false; reason: string };

/**
 * The host part of a Host header, lowercased, without its port; undefined when it is not `host[:port]`.
 * An IPv6 literal keeps its brackets: kubectl strips them with SplitHostPort, so its own default rule
 * `^\[::1\]$` rejects `[::1]:8001` (kubernetes#77496); here `[::1]:8001` is `[::1]`.
 */
export function hostWithoutPort(header: string): string | undefined {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]/@\s]+)(?::\d{1,5})?$/.exec(header);
  return m?.[1]?.toLowerCase();
}

export function isLocalHost(header: string | undefined): boolean {
  const host = header === undefined ? undefined : hostWithoutPort(header);
  return host !== undefined && LOCAL_HOSTS.includes(host);
}

/** An Origin (`scheme://host[:port]`, RFC 6454) of a page served from this machine. `null` is not. */
export function isLocalOrigin(origin: string): boolean {
  const m = /^https?:\/\/(.+)$/i.exec(origin);
  return m?.[1] !== undefined && isLocalHost(m[1]);
}

export function checkLocalRequest(req: RequestHead): LocalVerdict {
  // A DNS-rebinding page reaches 127.0.0.1 under its own name, and its Host header says so.
  if (!isLocalHost(req.host)) return { ok: false, reason: "the Host header is not localhost, 127.0.0.1 or [::1]" };
  // A page's fetch('http://127.0.0.1:N') sends a local Host but its own Origin.
  if (req.origin !== undefined && !isLocalOrigin(req.origin)) return { ok: false, reason: "the request comes from a web page (Origin)" };
  // Browsers preflight before a cross-origin request that carries headers or JSON; none is meant for us.
  if (req.method === "OPTIONS" && req.accessControlRequestMethod !== undefined) {
    return { ok: false, reason: "browser preflight requests are refused" };
  }
  // An <img>, <script>, form or link on another site sends no Origin on GET, but browsers mark it.
  if (req.secFetchSite === "cross-site" && req.origin === undefined) {
    return { ok: false, reason: "the request comes from another site (Sec-Fetch-Site)" };
  }
  return { ok: true };
}
