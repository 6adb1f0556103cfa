import { defineConfig } from "vitest/config";

// Two projects: fast pure tests, and end-to-end tests on the simulated cloud (root, netns, sshd).
// The e2e project runs files one at a time: every file brings up its own hosts, and the machine has 2 cores.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/**/*.test.ts"],
          exclude: ["test/e2e/**", "test/sim/**"],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts", "test/sim/**/*.test.ts"],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
