/**
 * The environment the shipped deployments give each process, read off the image's
 * Dockerfile and the edge's systemd unit: settings glibc reads at process start, which the
 * programs cannot set for themselves.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FREED_MEMORY_ENV, HUGE_PAGES_ENV } from "@tandem/runtime";

const ROOT = join(import.meta.dirname, "..");
const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
const unit = readFileSync(join(ROOT, "edge-agent", "install", "tandem-edge.service"), "utf8");

/** The variables a Dockerfile's final stage sets with ENV (continued lines included). */
function imageEnvironment(text: string): Record<string, string> {
  const finalStage = text.slice(text.lastIndexOf("\nFROM "));
  const env: Record<string, string> = {};
  for (const match of finalStage.matchAll(/^ENV ((?:.*\\\n)*.*)$/gm))
    for (const pair of match[1].split(/\s*\\\n\s*|\s+/).filter(Boolean)) {
      const [name, ...value] = pair.split("=");
      env[name] = value.join("=");
    }
  return env;
}

/** The variables a unit's active Environment= lines set (commented lines are not). */
function unitEnvironment(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const match of text.matchAll(/^Environment=([^=\n]+)=(.*)$/gm)) env[match[1]] = match[2];
  return env;
}

describe("the environment of a deployed process", () => {
  it("gives malloc's large blocks transparent huge pages, in the image and on the edge", () => {
    expect(imageEnvironment(dockerfile)[HUGE_PAGES_ENV.name]).toBe(HUGE_PAGES_ENV.value);
    expect(unitEnvironment(unit)[HUGE_PAGES_ENV.name]).toBe(HUGE_PAGES_ENV.value);
  });

  it("fixes no mmap threshold by default: it slows prefill, and only processes that drop experts need it", () => {
    expect(imageEnvironment(dockerfile)[FREED_MEMORY_ENV.name]).toBeUndefined();
    expect(unitEnvironment(unit)[FREED_MEMORY_ENV.name]).toBeUndefined();
    // The edge's line is there to uncomment for an agent with expertBudgetMb.
    expect(unit).toContain(`#Environment=${FREED_MEMORY_ENV.name}=${FREED_MEMORY_ENV.value}`);
  });
});
