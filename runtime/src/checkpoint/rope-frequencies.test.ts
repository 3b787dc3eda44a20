/**
 * Rotary frequencies against transformers' own formulas, re-stated in numpy float32 by
 * runtime/test-data/rope_frequencies.py for the real configs of Llama 3.2 1B and 3.1 8B,
 * linear scaling and none.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { RopeScaling } from "./model-config.ts";
import { rotaryInverseFrequencies } from "./rope-frequencies.ts";

interface Case {
  name: string;
  headDim: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  expected: number[];
}

const CASES = JSON.parse(
  readFileSync(join(import.meta.dirname, "..", "..", "test-data", "rope-frequencies.json"), "utf8"),
) as Case[];

describe("rotaryInverseFrequencies", () => {
  it.each(CASES.map((c) => [c.name, c] as const))(
    "%s: as transformers computes them, to float32's last bit or two",
    (_name, c) => {
      const actual = rotaryInverseFrequencies(c);
      expect(actual).toHaveLength(c.headDim / 2);
      for (let i = 0; i < actual.length; i++) {
        // pow in float32 (torch, numpy) may round one ulp off the correctly rounded result.
        const relative = Math.abs(actual[i] - c.expected[i]) / c.expected[i];
        expect(relative, `frequency ${i}: ${actual[i]} vs ${c.expected[i]}`).toBeLessThanOrEqual(2 ** -22);
      }
    },
  );

  it("llama3 keeps the high frequencies, divides the low ones by the factor, and blends the band between", () => {
    const llama32 = CASES.find((c) => c.name.startsWith("llama3 (Llama-3.2"))!;
    const scaled = rotaryInverseFrequencies(llama32);
    const plain = rotaryInverseFrequencies({ headDim: llama32.headDim, ropeTheta: llama32.ropeTheta });
    const ratios = Array.from(scaled, (x, i) => plain[i] / x);
    expect(ratios[0]).toBe(1); // wavelength 2π: far shorter than 8192 / 4
    expect(ratios.at(-1)).toBeCloseTo(32, 4); // the longest wavelengths: ÷ factor
    const blended = ratios.filter((r) => r > 1.0001 && r < 31.999);
    expect(blended.length).toBeGreaterThan(0);
    expect([...ratios].sort((a, b) => a - b)).toEqual(ratios); // monotone from high to low frequency
  });
});
