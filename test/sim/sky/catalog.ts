// The slice of SkyPilot's GCP catalog (v8) the simulated cloud offers (skypilot.md §7, tpu.md §1-2).

// Zones that offer TPU v6e, in the order the fake optimizer tries them (cheapest-first in the real
// one; the simulated prices are equal, so US regions come first).
export const V6E_ZONES = [
  "us-east5-a",
  "us-east5-b",
  "us-east5-c",
  "us-central1-a",
  "us-central1-b",
  "us-central1-c",
  "us-east1-d",
  "us-east4-a",
  "us-south1-a",
  "us-south1-c",
  "us-west1-c",
  "us-central2-b",
  "europe-west4-a",
  "asia-east1-c",
  "asia-northeast1-b",
  "asia-south1-b",
  "asia-south1-c",
  "asia-southeast1-b",
  "southamerica-east1-c",
  "southamerica-west1-a",
];

export const V6E_SIZES = [1, 4, 8, 16, 32, 64, 128, 256];

// VMs (= TPU workers = networkEndpoints) per v6e slice.
export function v6eHostsPerNode(chips: number): number {
  return chips <= 8 ? 1 : chips / 4;
}

export const TPU7X_INSTANCE_TYPE = "tpu7x-standard-4t";
export const TPU7X_ZONES = ["us-central1-c"];

export const DEFAULT_RUNTIME_V6E = "v2-alpha-tpuv6e";

const SPECIAL_ZONES: Record<string, string[]> = {
  "europe-west1": ["b", "c", "d"],
  "us-central1": ["a", "b", "c", "f"],
  "us-central2": ["b"],
  "us-east1": ["b", "c", "d"],
};

const REGIONS = [
  "africa-south1",
  "asia-east1",
  "asia-east2",
  "asia-northeast1",
  "asia-northeast2",
  "asia-northeast3",
  "asia-south1",
  "asia-south2",
  "asia-southeast1",
  "asia-southeast2",
  "australia-southeast1",
  "australia-southeast2",
  "europe-central2",
  "europe-north1",
  "europe-southwest1",
  "europe-west1",
  "europe-west10",
  "europe-west12",
  "europe-west2",
  "europe-west3",
  "europe-west4",
  "europe-west6",
  "europe-west8",
  "europe-west9",
  "me-central1",
  "me-central2",
  "me-west1",
  "northamerica-northeast1",
  "northamerica-northeast2",
  "southamerica-east1",
  "southamerica-west1",
  "us-central1",
  "us-central2",
  "us-east1",
  "us-east4",
  "us-east5",
  "us-south1",
  "us-west1",
  "us-west2",
  "us-west3",
  "us-west4",
];

export function gcpRegions(): string[] {
  return REGIONS;
}

export function gcpZones(region: string): string[] {
  return (SPECIAL_ZONES[region] ?? ["a", "b", "c"]).map((z) => `${region}-${z}`);
}

export function regionOfZone(zone: string): string {
  return zone.replace(/-[a-z]$/, "");
}

export function parseV6e(acc: string): number | null {
  const m = /^tpu-v6e-(\d+)$/.exec(acc);
  if (!m?.[1]) return null;
  const n = Number(m[1]);
  return V6E_SIZES.includes(n) ? n : null;
}
