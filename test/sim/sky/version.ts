// The SkyPilot build whose CLI the fake reproduces (docs/upstream/skypilot-cli-help/README.md).
export const SKY_VERSION = "1.0.0-dev0";
export const SKY_COMMIT = "93a24d470288239271c9598abdb14b0e698eebef";
