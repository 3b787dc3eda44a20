/**
 * Rotary embedding frequencies: the one place the graph writer and the reference forward
 * take them from. Computed in float32 step by step as transformers does
 * (`modeling_rope_utils`), so a checkpoint's positions rotate exactly as its authors'
 * library rotates them: the base `1 / theta^(2i / head_dim)`, then the config's scaling —
 * `linear` (every frequency ÷ factor) or `llama3` (Llama 3.1+: wavelengths longer than
 * the original context ÷ low_freq_factor are divided by factor, those shorter than it ÷
 * high_freq_factor kept, the band between blended smoothly).
 */
import type { ModelConfig } from "./model-config.ts";

const f = Math.fround;

/** `1 / theta^(2i / headDim)` for i < headDim / 2, scaled as the config says; float32. */
export function rotaryInverseFrequencies(
  config: Pick<ModelConfig, "headDim" | "ropeTheta" | "ropeScaling">,
): Float32Array {
  const half = config.headDim / 2;
  const inverse = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = f((2 * i) / config.headDim);
    inverse[i] = f(1 / f(Math.pow(config.ropeTheta, exponent)));
  }
  const scaling = config.ropeScaling;
  if (scaling?.type === "linear") for (let i = 0; i < half; i++) inverse[i] = f(inverse[i] / scaling.factor);
  if (scaling?.type === "llama3") {
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions } = scaling;
    const lowFreqWavelength = originalMaxPositions / lowFreqFactor;
    const highFreqWavelength = originalMaxPositions / highFreqFactor;
    for (let i = 0; i < half; i++) {
      const frequency = inverse[i];
      const wavelength = f(f(2 * Math.PI) / frequency);
      if (wavelength > lowFreqWavelength) inverse[i] = f(frequency / factor);
      else if (wavelength >= highFreqWavelength) {
        const smooth = f(
          f(f(originalMaxPositions / wavelength) - lowFreqFactor) / f(highFreqFactor - lowFreqFactor),
        );
        inverse[i] = f(f(f(f(1 - smooth) * frequency) / factor) + f(smooth * frequency));
      }
    }
  }
  return inverse;
}
