import { describe, expect, it } from "vitest";
import { expertFormatsByActivation } from "./expert-formats.ts";

describe("per-expert formats by activation frequency", () => {
  it("keeps the experts carrying the hot share of each layer's activations in the hot format, the rest cold", () => {
    // Layer 0: experts 2 and 0 carry 80 of 100; layer 1: expert 3 alone carries 90.
    const formatOf = expertFormatsByActivation(
      [30, 10, 50, 10, 2, 3, 5, 90],
      { numLayers: 2, numExperts: 4 },
      {
        hot: "int8",
        cold: "int4",
      },
    );
    expect([0, 1, 2, 3].map((e) => formatOf(0, e))).toEqual(["int8", "int4", "int8", "int4"]);
    expect([0, 1, 2, 3].map((e) => formatOf(1, e))).toEqual(["int4", "int4", "int4", "int8"]);
  });

  it("with a share of 1 keeps every expert ever chosen hot, and every expert of a layer no token was routed through", () => {
    const all = expertFormatsByActivation(
      [5, 0, 1, 0, 0, 0, 0, 0],
      { numLayers: 2, numExperts: 4 },
      {
        hot: "fp32",
        cold: "int4",
        hotShare: 1,
      },
    );
    expect([0, 1, 2, 3].map((e) => all(0, e))).toEqual(["fp32", "int4", "fp32", "int4"]);
    expect([0, 1, 2, 3].map((e) => all(1, e))).toEqual(["fp32", "fp32", "fp32", "fp32"]);
  });

  it("refuses a share outside (0, 1], an unknown format and counts that are not the model's layers × experts, naming them", () => {
    expect(() =>
      expertFormatsByActivation(
        [1, 2],
        { numLayers: 1, numExperts: 2 },
        { hot: "int8", cold: "int4", hotShare: 0 },
      ),
    ).toThrow(/expertHotShare/);
    expect(() =>
      expertFormatsByActivation(
        [1, 2],
        { numLayers: 1, numExperts: 2 },
        { hot: "int8", cold: "int3" as "int4" },
      ),
    ).toThrow(/cold/);
    expect(() =>
      expertFormatsByActivation([1, 2, 3], { numLayers: 1, numExperts: 2 }, { hot: "int8", cold: "int4" }),
    ).toThrow(/expertActivations/);
  });
});
