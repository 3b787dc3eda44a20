import { describe, expect, it } from "vitest";
import { cloudSegmentSpec, edgeSegmentSpec, segmentSpec, type WeightFormat } from "@tandem/runtime";
import { parseModelConfig, REAL_MODEL_CONFIGS, type RealModelName } from "@tandem/runtime/testing";
import { caseMemoryBytes, caseTooBigReason } from "./case-memory.ts";

const GIB = 2 ** 30;
const configOf = (name: RealModelName) => parseModelConfig(REAL_MODEL_CONFIGS[name], `${name}/config.json`);
const whole = (name: RealModelName, weightFormat: WeightFormat) =>
  segmentSpec({ fromLayer: 0, toLayer: configOf(name).numLayers, finalHead: true, weightFormat });

describe("whether a benchmark case fits the machine", () => {
  it("keeps a 7B model's fp32 whole off a 24 GiB machine, and runs its quantized segments there", () => {
    const qwen = configOf("Qwen2.5-7B");
    expect(caseTooBigReason(qwen, whole("Qwen2.5-7B", "fp32"), 24 * GIB)).toMatch(
      /^needs about \d+ MB, the machine has 24576 MB$/,
    );
    for (const weights of ["int8", "w8a8", "int4"] as const)
      expect(caseTooBigReason(qwen, whole("Qwen2.5-7B", weights), 24 * GIB), weights).toBeUndefined();
    expect(
      caseTooBigReason(qwen, edgeSegmentSpec(14, [{ afterLayer: 14 }], "int4"), 24 * GIB),
    ).toBeUndefined();
    expect(caseTooBigReason(qwen, cloudSegmentSpec(14, 28, "int8"), 24 * GIB)).toBeUndefined();
  });

  it("runs every format of a 1B model on a 24 GiB machine, and refuses them on a 2 GiB one", () => {
    for (const weights of ["fp32", "int8", "w8a8", "int4"] as const) {
      expect(
        caseTooBigReason(configOf("Llama-3.2-1B"), whole("Llama-3.2-1B", weights), 24 * GIB),
      ).toBeUndefined();
      expect(
        caseTooBigReason(configOf("Llama-3.2-1B"), whole("Llama-3.2-1B", weights), 2 * GIB),
      ).toBeDefined();
    }
  });

  it("estimates above what the 1B fp32 whole was measured to peak at while building (6188 MB)", () => {
    expect(
      caseMemoryBytes(configOf("Llama-3.2-1B"), whole("Llama-3.2-1B", "fp32")) / 2 ** 20,
    ).toBeGreaterThan(6188);
  });
});
