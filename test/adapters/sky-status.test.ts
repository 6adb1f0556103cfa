// `sky status -o json` as it enters tpu-deploy: output that holds no list of cluster records is an error,
// never "no clusters" — relaunch and gc would take "no clusters" for "gone" and act on a slice that serves.
import { describe, expect, it } from "vitest";
import { parseStatusJson } from "../../src/adapters/sky.js";

describe("parseStatusJson", () => {
  it("reads the list after the API server's log lines", () => {
    const out = 'Fetching status...\n[{"name": "a", "status": "UP", "cluster_name_on_cloud": "a-2ea4"}]\n';
    expect(parseStatusJson(out)).toEqual([{ name: "a", status: "UP", cluster_name_on_cloud: "a-2ea4" }]);
  });

  it("an empty list is no clusters", () => {
    expect(parseStatusJson("[]\n")).toEqual([]);
  });

  it.each([
    ["empty output", ""],
    ["only a log line", "Fetching status...\n"],
    ["text that is not JSON", "not json\n"],
  ])("%s is an error, not an empty list", (_what, out) => {
    expect(() => parseStatusJson(out)).toThrow(/no JSON list in the output/);
  });

  it.each([
    ["a record without a status", '[{"name": "a"}]'],
    ["an object instead of a list", '{"name": "a", "status": "UP"}'],
  ])("%s is an error", (_what, out) => {
    expect(() => parseStatusJson(out)).toThrow();
  });
});
