import { describe, expect, it } from "vitest";
import { deriveInstallationId, INSTALLATION_ID, OWNER_LABEL, ownershipOf } from "../../src/core/ownership.js";

describe("owner labels", () => {
  const me = "0123456789abcdef";
  it.each([
    [{ [OWNER_LABEL]: me, "managed-by": "tpu-deploy" }, { kind: "ours" }],
    [{ [OWNER_LABEL]: "fedcba9876543210" }, { kind: "other", owner: "fedcba9876543210" }],
    [{ "managed-by": "tpu-deploy" }, { kind: "unlabelled" }],
    [{ [OWNER_LABEL]: "" }, { kind: "unlabelled" }],
    [null, { kind: "unlabelled" }],
  ])("%j → %j", (labels, want) => {
    expect(ownershipOf(labels, me)).toEqual(want);
  });

  it("the derived id is a valid GCP label value, stable for the same facts, different for another directory, user or host", () => {
    const facts = { machineId: "m1", hostname: "h", stateHome: "/home/u/.tpu-deploy", uid: 1000 };
    const id = deriveInstallationId(facts);
    expect(id).toMatch(INSTALLATION_ID);
    expect(deriveInstallationId({ ...facts })).toBe(id);
    expect(deriveInstallationId({ ...facts, stateHome: "/srv/tpd" })).not.toBe(id);
    expect(deriveInstallationId({ ...facts, uid: 0 })).not.toBe(id);
    expect(deriveInstallationId({ ...facts, hostname: "other" })).not.toBe(id);
  });
});
