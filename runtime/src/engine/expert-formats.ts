/**
 * Per-expert weight formats from measured activation frequency (EdgeMoE's observation:
 * a few experts carry most tokens): in each layer, the most chosen experts that together
 * carry `hotShare` of the layer's activations keep the `hot` format; the rest, rarely run,
 * take the smaller `cold` one. Activations come from a calibration run over real text.
 */
import { InvalidArgumentError } from "@tandem/common";
import { WEIGHT_FORMATS, type WeightFormat } from "../graph/segment-spec.ts";

export interface ActivationFormatOptions {
  /** Format of the experts that carry most of the traffic. */
  hot: WeightFormat;
  /** Format of the others. */
  cold: WeightFormat;
  /** Share of each layer's activations the hot experts carry at least. @default 0.8 */
  hotShare?: number;
}

export const DEFAULT_HOT_SHARE = 0.8;

/**
 * `(layer, expert) → format` from activations indexed layer·numExperts + expert over every
 * layer of the model (a layer with no activations keeps every expert hot). Ties go to the
 * lower expert id.
 */
export function expertFormatsByActivation(
  activations: readonly number[],
  model: { numLayers: number; numExperts: number },
  options: ActivationFormatOptions,
): (layer: number, expert: number) => WeightFormat {
  const { numLayers, numExperts } = model;
  const hotShare = options.hotShare ?? DEFAULT_HOT_SHARE;
  if (!(hotShare > 0 && hotShare <= 1))
    throw new InvalidArgumentError("expertHotShare", `must be in (0, 1], got ${hotShare}`);
  for (const [field, format] of [
    ["hot", options.hot],
    ["cold", options.cold],
  ] as const)
    if (!WEIGHT_FORMATS.includes(format))
      throw new InvalidArgumentError(field, `must be one of ${WEIGHT_FORMATS.join(", ")}, got ${format}`);
  // A calibration of another model (or a damaged file) would otherwise leave layers cold.
  if (activations.length !== numLayers * numExperts)
    throw new InvalidArgumentError(
      "expertActivations",
      `must count ${numLayers} layers × ${numExperts} experts = ${numLayers * numExperts}, got ${activations.length}`,
    );
  const hot = new Set<string>();
  for (let layer = 0; layer < numLayers; layer++) {
    const counts = activations.slice(layer * numExperts, (layer + 1) * numExperts);
    const total = counts.reduce((a, b) => a + b, 0);
    const order = counts
      .map((count, expert) => ({ count, expert }))
      .sort((a, b) => b.count - a.count || a.expert - b.expert);
    let carried = 0;
    for (const { count, expert } of order) {
      if (total > 0 && carried >= hotShare * total) break;
      hot.add(`${layer}:${expert}`);
      carried += count;
    }
  }
  return (layer, expert) => (hot.has(`${layer}:${expert}`) ? options.hot : options.cold);
}
