// SSH host keys: which key a host must offer before tpu-deploy logs in and sends it secrets. Pure:
// fingerprints as ssh prints them, the check behind ssh2's hostVerifier, and each TPU worker's keys read
// from the Cloud TPU API's guest attributes the way gcloud reads them (hostkeys-sglang-facts.md §A).
import { createHash } from "node:crypto";

/** A public host key as known_hosts and the guest agent write it: its type and the base64 of its blob. */
export interface HostKey {
  type: string;
  key: string;
}

/** Where a pinned key came from: the Cloud TPU API vouched for it, or it was the first key the host offered. */
export type HostKeySource = "tpu-api" | "first-use";

export type HostKeyPolicy =
  /** Only one of these keys will do. */
  | { kind: "pinned"; keys: readonly HostKey[]; from: HostKeySource }
  /** Nothing to check against yet: accept the key offered; the caller pins it. */
  | { kind: "first-use" };

export type HostKeyCheck = { ok: true; key: HostKey } | { ok: false; offered: HostKey | undefined; expected: readonly HostKey[] };

// gcloud's SUPPORTED_HOSTKEY_TYPES, which are also the guest agent's defaults (ecdsa, ed25519, rsa); in the
// order ssh2 is asked for them, strongest first. RSA keys sign with SHA-2 where both sides can.
const ALGORITHMS: Record<string, string[]> = {
  "ssh-ed25519": ["ssh-ed25519"],
  "ecdsa-sha2-nistp256": ["ecdsa-sha2-nistp256"],
  "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
};
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** SHA256:<base64 without padding>, as `ssh-keygen -l` and ssh's warnings print it. */
export function fingerprint(k: HostKey): string {
  return `SHA256:${createHash("sha256").update(Buffer.from(k.key, "base64")).digest("base64").replace(/=+$/, "")}`;
}

export function describeHostKey(k: HostKey): string {
  return `${k.type} ${fingerprint(k)}`;
}

/** The key in SSH wire format (what ssh2 hands hostVerifier): string type, then the key's own fields. */
export function hostKeyFromBlob(blob: Uint8Array): HostKey | undefined {
  const buf = Buffer.from(blob);
  if (buf.length < 4) return undefined;
  const len = buf.readUInt32BE(0);
  if (len === 0 || len > 64 || 4 + len >= buf.length) return undefined;
  const type = buf.subarray(4, 4 + len).toString("latin1");
  if (!/^[a-z0-9@.-]+$/.test(type)) return undefined;
  return { type, key: buf.toString("base64") };
}

function sameKey(a: HostKey, b: HostKey): boolean {
  return a.type === b.type && Buffer.from(a.key, "base64").equals(Buffer.from(b.key, "base64"));
}

/** The verifier: may a host that offers this key be talked to? */
export function checkHostKey(policy: HostKeyPolicy, blob: Uint8Array): HostKeyCheck {
  const offered = hostKeyFromBlob(blob);
  const pinned = policy.kind === "pinned" ? policy.keys : [];
  if (!offered) return { ok: false, offered, expected: pinned };
  if (policy.kind === "first-use") return { ok: true, key: offered };
  const match = pinned.find((k) => sameKey(k, offered));
  if (match) return { ok: true, key: match };
  const sameType = pinned.filter((k) => k.type === offered.type);
  return { ok: false, offered, expected: sameType.length > 0 ? sameType : pinned };
}

/**
 * The host key algorithms to offer in the key exchange: only the pinned types, so the host answers with a
 * key that can be checked (OpenSSH does the same with known keys). Undefined leaves ssh2's defaults.
 */
export function serverHostKeyAlgorithms(policy: HostKeyPolicy): string[] | undefined {
  if (policy.kind === "first-use") return undefined;
  const types = new Set(policy.keys.map((k) => k.type));
  return Object.entries(ALGORITHMS).flatMap(([type, algs]) => (types.has(type) ? algs : []));
}

/** One GuestAttributes entry of GetGuestAttributes, as far as host keys go. */
export interface GuestAttributesView {
  queryPath?: string | null;
  queryValue?: { items?: { namespace?: string | null; key?: string | null; value?: string | null }[] | null } | null;
}

/**
 * Each entry's host keys, in entry order: the response has no worker id, entry i is worker i (gcloud's
 * TransformGuestAttributes). Kept: namespace "hostkeys", a type ssh uses, a value whose first word is the
 * base64 blob of a key of that very type. gcloud cuts at whitespace because a newline in a value could
 * smuggle a second line into known_hosts.
 */
export function hostKeysFromGuestAttributes(entries: readonly GuestAttributesView[]): HostKey[][] {
  return entries.map((entry) =>
    (entry.queryValue?.items ?? []).flatMap((item): HostKey[] => {
      const type = item.key ?? "";
      if (item.namespace !== "hostkeys" || !(type in ALGORITHMS)) return [];
      const key = (item.value ?? "").trim().split(/\s+/)[0] ?? "";
      if (!BASE64.test(key)) return [];
      const blob = Buffer.from(key, "base64");
      if (blob.toString("base64") !== key || hostKeyFromBlob(blob)?.type !== type) return [];
      return [{ type, key }];
    }),
  );
}
