/**
 * The logits at every position for given token ids, for checking the engine against other
 * implementations. With a split, the ids run through the lower segment and its hidden
 * states through the upper one, as between an edge and a cloud.
 */
import { InternalError } from "@tandem/common";
import { loadCheckpoint } from "../checkpoint/load-checkpoint.ts";
import { segmentSpec } from "../graph/segment-spec.ts";
import { SegmentModel } from "./segment-model.ts";
import { SegmentSessions } from "./segment-sessions.ts";

/** Logits [positions][vocab] of the full model, optionally computed across a split. */
export async function computeLogits(
  modelDir: string,
  ids: number[],
  split?: number,
  threads = 1,
): Promise<number[][]> {
  const checkpoint = await loadCheckpoint(modelDir);
  const layers = checkpoint.config.numLayers;
  const vocab = checkpoint.config.vocabSize;
  const specs =
    split === undefined || split === layers
      ? [segmentSpec({ fromLayer: 0, toLayer: layers, finalHead: true, positions: "all", logits: true })]
      : [
          segmentSpec({ fromLayer: 0, toLayer: split, outputHidden: true }),
          segmentSpec({ fromLayer: split, toLayer: layers, finalHead: true, positions: "all", logits: true }),
        ];
  const models = await Promise.all(specs.map((spec) => SegmentModel.load(checkpoint, spec, { threads })));
  try {
    const sessions = models.map((model) => new SegmentSessions(model));
    sessions.forEach((s) => s.open("logits"));
    let step = await sessions[0].forward("logits", { ids });
    if (sessions.length === 2) {
      if (!step.hidden) throw new InternalError("lower segment returned no hidden state");
      step = await sessions[1].forward("logits", { hidden: step.hidden, count: ids.length });
    }
    const logits = step.exits[step.exits.length - 1].logits;
    if (!logits) throw new InternalError("segment returned no logits");
    return Array.from({ length: ids.length }, (_, i) =>
      Array.from(logits.subarray(i * vocab, (i + 1) * vocab)),
    );
  } finally {
    await Promise.all(models.map((m) => m.release()));
  }
}
