// Host key pinning, the pure part: fingerprints as ssh prints them, the verifier ssh2's hostVerifier asks,
// the Cloud TPU API's guest attributes read the way gcloud reads them, and the state that records pins.
import { describe, expect, it } from "vitest";
import {
  checkHostKey,
  describeHostKey,
  fingerprint,
  type HostKey,
  hostKeyFromBlob,
  hostKeysFromGuestAttributes,
  serverHostKeyAlgorithms,
} from "../../src/core/host-keys.js";
import { keepPinnedHostKeys, parseState } from "../../src/core/state.js";

// Made with ssh-keygen; the fingerprints are what `ssh-keygen -lf` printed for them.
const ED25519: HostKey = { type: "ssh-ed25519", key: "AAAAC3NzaC1lZDI1NTE5AAAAICzIIkOoZ4t+r6IHZGmBVfAGUpGnkGisTUgijgsbMS37" };
const ED25519_FP = "SHA256:N10COZoBwebgw/KDL2CW5wGvp82V5rjFg3fxTuK5+4E";
const OTHER_ED25519: HostKey = { type: "ssh-ed25519", key: "AAAAC3NzaC1lZDI1NTE5AAAAIATOFaCLYsnKShHVviVonGGkzAH04BHsDC7pGyYlJOCS" };
const OTHER_ED25519_FP = "SHA256:8XCdGDCKyZqtSapkhkl/lDZPrWpi3HmPLC/9Vo9IxWg";
const ECDSA: HostKey = {
  type: "ecdsa-sha2-nistp256",
  key: "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBI6m63QcdBgGCYrUKfk0MfAS+i4JRxXzBWzwxT6nuBV8rcR3Kx+2BB5N5jdr65gOOpND2AaufR4mGodlTeIPS9A=",
};
const ECDSA_FP = "SHA256:drxGEUcFTNgTZaPz85x2ZYMIlNh0tdMXJfhzicgKA+M";
const RSA: HostKey = {
  type: "ssh-rsa",
  key: "AAAAB3NzaC1yc2EAAAADAQABAAABAQC1wC99IxHUFz8ywbwkuK/eF8qezCs3jRy1WRqHO+C3MGRJ1pADEPQlxELQghBF6DqCERZL0zluD6n/foEDiYx3CX5Gja5aSPnIAhr75Ect3rMIKhUBiJVMzdkN+LtvZspDUoQ3LzvgaNVvWXH/vIdbuN6c05psRI1nA8HZWkTXcweg9hV4O/ynsHajzxYCe5q5gxDBLxSCS7Ko4i4sRFTVh1XEN9aFd/iGo20HIxOLwVSAcvIKaJ8mmqiKPbSpZQXll1iQGPaYiGsRwWgHpQbf6CAUZk4S6Sq4NHjA8Wn1vgXCcpkUzW+vdhMxJ1EtNrFQvcHdbsKiZ8ERmCm7OOtT",
};
const RSA_FP = "SHA256:TaWTIfe3YT5YM65/LEd7s3f8aqRg/I6cBMsaCPEOjfE";

const blob = (k: HostKey): Buffer => Buffer.from(k.key, "base64");

describe("fingerprint", () => {
  it.each([
    [ED25519, ED25519_FP],
    [OTHER_ED25519, OTHER_ED25519_FP],
    [ECDSA, ECDSA_FP],
    [RSA, RSA_FP],
  ])("is ssh-keygen -lf's SHA256 form for %o", (key, fp) => {
    expect(fingerprint(key)).toBe(fp);
  });

  it("names the type with it, as ssh's host key messages do", () => {
    expect(describeHostKey(ED25519)).toBe(`ssh-ed25519 ${ED25519_FP}`);
  });
});

describe("hostKeyFromBlob (what ssh2 hands the verifier: the key in SSH wire format)", () => {
  it("reads the type from the blob itself", () => {
    expect(hostKeyFromBlob(blob(ED25519))).toEqual(ED25519);
    expect(hostKeyFromBlob(blob(RSA))).toEqual(RSA);
    expect(hostKeyFromBlob(blob(ECDSA))).toEqual(ECDSA);
  });

  it("refuses what is not a key blob", () => {
    expect(hostKeyFromBlob(Buffer.alloc(0))).toBeUndefined();
    expect(hostKeyFromBlob(Buffer.from([0, 0, 1, 0, 65]))).toBeUndefined();
    expect(hostKeyFromBlob(Buffer.from([0, 0, 0, 3, 0x41, 0x0a, 0x42]))).toBeUndefined();
  });
});

describe("checkHostKey (the verifier)", () => {
  const pinned = { kind: "pinned", keys: [ECDSA, ED25519, RSA], from: "tpu-api" } as const;

  it("accepts a pinned key of any pinned type", () => {
    for (const k of [ED25519, ECDSA, RSA]) expect(checkHostKey(pinned, blob(k))).toEqual({ ok: true, key: k });
  });

  it("refuses another key, saying which was offered and which were expected (same type first)", () => {
    const r = checkHostKey(pinned, blob(OTHER_ED25519));
    expect(r).toEqual({ ok: false, offered: OTHER_ED25519, expected: [ED25519] });
  });

  it("refuses a key of a type that was not pinned, expecting all pinned keys", () => {
    const r = checkHostKey({ kind: "pinned", keys: [ED25519], from: "first-use" }, blob(RSA));
    expect(r).toEqual({ ok: false, offered: RSA, expected: [ED25519] });
  });

  it("refuses anything when nothing usable is pinned, and garbage always", () => {
    expect(checkHostKey({ kind: "pinned", keys: [], from: "tpu-api" }, blob(ED25519)).ok).toBe(false);
    expect(checkHostKey({ kind: "first-use" }, Buffer.from("junk")).ok).toBe(false);
  });

  it("on first use accepts whatever key the host offers, and says which", () => {
    expect(checkHostKey({ kind: "first-use" }, blob(OTHER_ED25519))).toEqual({ ok: true, key: OTHER_ED25519 });
  });
});

describe("serverHostKeyAlgorithms (what ssh2 offers in KEXINIT, so the host answers with a pinned type)", () => {
  it("lists only the pinned types, ed25519 first, RSA with its SHA-2 signature names", () => {
    expect(serverHostKeyAlgorithms({ kind: "pinned", keys: [RSA, ECDSA, ED25519], from: "tpu-api" })).toEqual([
      "ssh-ed25519",
      "ecdsa-sha2-nistp256",
      "rsa-sha2-512",
      "rsa-sha2-256",
      "ssh-rsa",
    ]);
    expect(serverHostKeyAlgorithms({ kind: "pinned", keys: [ED25519], from: "first-use" })).toEqual(["ssh-ed25519"]);
  });

  it("leaves ssh2's defaults alone on first use", () => {
    expect(serverHostKeyAlgorithms({ kind: "first-use" })).toBeUndefined();
  });
});

describe("hostKeysFromGuestAttributes (GetGuestAttributes → each worker's keys, by position)", () => {
  const entry = (items: { namespace: string; key: string; value: string }[]) => ({ queryPath: "", queryValue: { items } });

  it("keeps hostkeys items of the types ssh uses, per worker in entry order", () => {
    const r = hostKeysFromGuestAttributes([
      entry([
        { namespace: "", key: "hostname", value: "t1v-n-1-w-0" },
        { namespace: "hostkeys", key: "ecdsa-sha2-nistp256", value: ECDSA.key },
        { namespace: "hostkeys", key: "ssh-ed25519", value: ED25519.key },
        { namespace: "hostkeys", key: "ssh-rsa", value: RSA.key },
      ]),
      entry([{ namespace: "hostkeys", key: "ssh-ed25519", value: OTHER_ED25519.key }]),
      entry([]),
    ]);
    expect(r).toEqual([[ECDSA, ED25519, RSA], [OTHER_ED25519], []]);
  });

  it("cuts a value at whitespace (a newline in it is a security issue, says gcloud) and drops what is not that type's key", () => {
    const r = hostKeysFromGuestAttributes([
      entry([
        { namespace: "hostkeys", key: "ssh-ed25519", value: `${ED25519.key}\nssh-rsa AAAA` },
        { namespace: "hostkeys", key: "ssh-rsa", value: ED25519.key }, // an ed25519 blob under the rsa name
        { namespace: "hostkeys", key: "ecdsa-sha2-nistp256", value: "not base64!" },
        { namespace: "hostkeys", key: "ssh-dss", value: "AAAAB3NzaC1kc3M=" },
        { namespace: "other", key: "ssh-ed25519", value: OTHER_ED25519.key },
      ]),
    ]);
    expect(r).toEqual([[ED25519]]);
  });

  it("reads a response without entries or items as no keys", () => {
    expect(hostKeysFromGuestAttributes([])).toEqual([]);
    expect(hostKeysFromGuestAttributes([{ queryPath: "" }])).toEqual([[]]);
  });
});

describe("state.json with pinned host keys", () => {
  const host = {
    rank: 0,
    slice: 0,
    workerId: 0,
    sshAlias: "c",
    externalIp: "198.18.3.5",
    internalIp: "198.19.3.5",
    user: "gcpuser",
    port: 22,
    identityFile: "/k",
  };
  const replica = (i: number, hosts: object[]) => ({
    replica: i,
    cluster: i === 0 ? "c" : `c-r${i}`,
    phase: "serving",
    spot: false,
    hosts,
    timings: {},
    relaunch: { attempts: 0, blocked: {}, churn: {}, spotFailures: 0 },
  });
  // The current format: a replica per SkyPilot cluster, each with its hosts.
  const state = (...replicas: object[][]) =>
    JSON.stringify({
      version: 2,
      name: "c",
      spec: { name: "c", tpu: { accelerator: "v6e-4", zones: ["z"] } },
      replicas: replicas.map((hosts, i) => replica(i, hosts)),
      history: [],
    });
  // The first format (one cluster, no replicas), as a state written before pinning has it.
  const stateV1 = (hosts: object[]) =>
    JSON.stringify({
      version: 1,
      name: "c",
      config: {
        name: "c",
        tpu: { generation: "v6e", accelerator: "v6e-4", zones: ["z"], spot: false },
        topology: { hosts: 1, slices: 1 },
        server: { port: 30000, distPort: 10011, secrets: [] },
      },
      phase: "serving",
      spot: false,
      hosts,
      timings: {},
      history: [],
      relaunch: { attempts: 0, blocked: {}, churn: {}, spotFailures: 0 },
    });
  const hostsOf = (s: { replicas: { hosts: { hostKeys?: HostKey[] }[] }[] }, i: number) => s.replicas[i]?.hosts ?? [];

  it("reads a state written before pinning (no keys, either format): those hosts get trust on first use", () => {
    for (const text of [state([host]), stateV1([host])]) {
      const r = parseState(text);
      expect(r.ok).toBe(true);
      if (r.ok) expect(hostsOf(r.state, 0)[0]?.hostKeys).toBeUndefined();
    }
  });

  it("reads pinned keys with where they came from, and refuses malformed ones", () => {
    const r = parseState(state([host], [{ ...host, sshAlias: "c-r1", hostKeys: [ED25519], hostKeysFrom: "tpu-api" }]));
    expect(r.ok && hostsOf(r.state, 1)[0]?.hostKeys).toEqual([ED25519]);
    expect(parseState(state([{ ...host, hostKeys: [{ type: "ssh-ed25519" }] }])).ok).toBe(false);
    expect(parseState(state([{ ...host, hostKeys: [ED25519], hostKeysFrom: "somewhere" }])).ok).toBe(false);
  });

  it("a writer holding an older copy never drops keys pinned meanwhile for the same host", () => {
    const pinned = { ...host, hostKeys: [ED25519], hostKeysFrom: "first-use" as const };
    const onDisk = JSON.parse(state([pinned]));
    const stale = JSON.parse(state([{ ...host, pgid: 42 }]));
    expect(hostsOf(keepPinnedHostKeys(onDisk, stale), 0)).toEqual([{ ...pinned, pgid: 42 }]);
    // Another host at another address (a relaunch) learns nothing from the old one.
    const moved = JSON.parse(state([{ ...host, externalIp: "198.18.9.9" }]));
    expect(hostsOf(keepPinnedHostKeys(onDisk, moved), 0)[0]?.hostKeys).toBeUndefined();
    // Keys the writer knows win (the Cloud TPU API vouched for new ones).
    const fresh = JSON.parse(state([{ ...host, hostKeys: [OTHER_ED25519], hostKeysFrom: "tpu-api" }]));
    expect(hostsOf(keepPinnedHostKeys(onDisk, fresh), 0)[0]?.hostKeys).toEqual([OTHER_ED25519]);
    // Nothing pinned on disk: the writer's copy as it is.
    expect(keepPinnedHostKeys(undefined, stale)).toBe(stale);
  });

  it("keeps pins in every replica: one pinned in replica 1 survives a writer that changed only replica 0", () => {
    const r0 = { ...host, hostKeys: [ED25519], hostKeysFrom: "tpu-api" as const };
    const r1 = { ...host, sshAlias: "c-r1", externalIp: "198.18.4.7" };
    const r1Pinned = { ...r1, hostKeys: [OTHER_ED25519], hostKeysFrom: "first-use" as const };
    // A status pinned replica 1's host on first use while an up, holding the older copy, restarted replica 0.
    const onDisk = JSON.parse(state([r0], [r1Pinned]));
    const writer = JSON.parse(state([{ ...r0, pgid: 7 }], [r1]));
    const kept = keepPinnedHostKeys(onDisk, writer);
    expect(hostsOf(kept, 0)).toEqual([{ ...r0, pgid: 7 }]);
    expect(hostsOf(kept, 1)).toEqual([r1Pinned]);
    // A pin belongs to its replica: the same address and alias in another replica is another host.
    const elsewhere = JSON.parse(state([r0], [], [r1]));
    expect(hostsOf(keepPinnedHostKeys(onDisk, elsewhere), 2)[0]?.hostKeys).toBeUndefined();
  });
});
