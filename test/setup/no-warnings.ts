// Every test file of every project: a process warning (a leaked listener, a deprecation, an unhandled
// library notice) fails the file, as execa's suite does. One setup file instead of a hook copied per file.
import { afterAll, beforeAll, expect } from "vitest";

const warnings: Error[] = [];
const onWarning = (w: Error): void => void warnings.push(w);

beforeAll(() => {
  process.on("warning", onWarning);
});

afterAll(() => {
  process.off("warning", onWarning);
  expect(warnings.map((w) => `${w.name}: ${w.message}`)).toEqual([]);
});
