/**
 * `tandem logits`: the logits at every position for given token ids, as JSON, for checking
 * the engine against other implementations. With --split the ids run through the lower
 * segment and its hidden states through the upper one, as between an edge and a cloud.
 */
import { parseArgs } from "node:util";
import { loadCheckpoint } from "../../runtime/src/checkpoint/load-checkpoint.ts";
import { SegmentModel } from "../../runtime/src/engine/segment-model.ts";
import { SegmentSessions } from "../../runtime/src/engine/segment-sessions.ts";
import { segmentSpec } from "../../runtime/src/graph/segment-spec.ts";
import { CliUsageError } from "../cli-errors.ts";
import { parseIntegerList, parseIntegerOption, requireOption } from "../cli-options.ts";

const HELP = `usage: tandem logits --model DIR --ids 1,2,3 [--split S] [--threads N]

Prints {"logits": [[...], ...]}: one row of vocabulary logits per input position.`;

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
      if (!step.hidden) throw new Error("lower segment returned no hidden state");
      step = await sessions[1].forward("logits", { hidden: step.hidden, count: ids.length });
    }
    const logits = step.exits[step.exits.length - 1].logits;
    if (!logits) throw new Error("segment returned no logits");
    return Array.from({ length: ids.length }, (_, i) =>
      Array.from(logits.subarray(i * vocab, (i + 1) * vocab)),
    );
  } finally {
    await Promise.all(models.map((m) => m.release()));
  }
}

export const logitsCommand = {
  summary: "print logits at every position",
  async run(args: string[]): Promise<number> {
    const { values } = parseArgs({
      args,
      options: {
        model: { type: "string" },
        ids: { type: "string" },
        split: { type: "string" },
        threads: { type: "string" },
        help: { type: "boolean" },
      },
      strict: true,
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const ids = parseIntegerList("--ids", requireOption("--ids", values.ids)) ?? [];
    if (ids.length === 0) throw new CliUsageError("--ids", "must hold at least one token id");
    const split = values.split === undefined ? undefined : parseIntegerOption("--split", values.split, 0, 1);
    const logits = await computeLogits(
      requireOption("--model", values.model),
      ids,
      split,
      parseIntegerOption("--threads", values.threads, 1, 1),
    );
    process.stdout.write(JSON.stringify({ logits }) + "\n");
    return 0;
  },
};
