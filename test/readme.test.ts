/**
 * The README's tables of packages, settings and job data are generated from the code
 * (scripts/readme-sections.ts): the README must say what the code says.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { README, regenerate } from "../scripts/readme-sections.ts";

describe("README.md", () => {
  it("has every generated section, each equal to what the code generates (npm run docs)", () => {
    const readme = readFileSync(README, "utf8");
    const { text, missing } = regenerate(readme);
    expect(missing).toEqual([]);
    expect(text === readme, "the README drifted from the code: run npm run docs").toBe(true);
  });

  it("would notice a drifted default", () => {
    const readme = readFileSync(README, "utf8");
    const drifted = readme.replace(
      "`TANDEM_EDGE_CLOUD_DEADLINE_MS` | `3000`",
      "`TANDEM_EDGE_CLOUD_DEADLINE_MS` | `4000`",
    );
    expect(drifted).not.toBe(readme);
    expect(regenerate(drifted).text).toBe(readme);
  });
});
