/**
 * `tandem logits`: the logits at every position for given token ids, as JSON, for checking
 * the engine against other implementations. With --split the ids run through the lower
 * segment and its hidden states through the upper one, as between an edge and a cloud.
 */
import { parseArgs } from "node:util";
import { computeLogits } from "@tandem/runtime";
import { UsageError } from "@tandem/common";
import { parseIntegerList, parseIntegerOption, requireOption } from "../cli-options.ts";

const HELP = `usage: tandem logits --model DIR --ids 1,2,3 [--split S] [--threads N]

Prints {"logits": [[...], ...]}: one row of vocabulary logits per input position.`;

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
    if (ids.length === 0) throw new UsageError("--ids", "must hold at least one token id");
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
