import { defineConfig } from "vitest/config";

// Three projects: pure tests (no processes, no root), tests that run real programs on this machine (sshd,
// bash: test/host), and end-to-end tests on the simulated cloud (root, netns, sshd). The last two share
// one preflight (test/sim/global-setup.ts) that installs what the machine lacks, or says what it is.
// The e2e project runs files one at a time: every file brings up its own hosts, and the machine has 2 cores.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          setupFiles: ["test/setup/no-warnings.ts"],
          include: ["test/**/*.test.ts"],
          exclude: ["test/e2e/**", "test/sim/**", "test/host/**"],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: "host",
          setupFiles: ["test/setup/no-warnings.ts"],
          include: ["test/host/**/*.test.ts"],
          globalSetup: ["test/sim/global-setup.ts"],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: "e2e",
          setupFiles: ["test/setup/no-warnings.ts"],
          include: ["test/e2e/**/*.test.ts", "test/sim/**/*.test.ts"],
          globalSetup: ["test/sim/global-setup.ts"],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
