/**
 * `tandem logits`: the logits at every position for given token ids, as JSON, for checking
 * the engine against other implementations. With --split the ids run through the lower
 * segment and its hidden states through the upper one, as between an edge and a cloud.
 */
import { z } from "zod";
import { RUNTIME_SETTINGS, computeLogits } from "@tandem/runtime";
import type { CommandDefinition } from "../command.ts";

const LOGITS_OPTIONS = z
  .object({
    model: z.string().min(1).meta({ description: "checkpoint directory" }),
    ids: z.array(z.int().min(0)).min(1).meta({ description: "token ids, comma-separated" }),
    split: z.int().min(1).optional().meta({ description: "compute across a split after this many layers" }),
    threads: RUNTIME_SETTINGS.threads,
  })
  .strict();

export const logitsCommand: CommandDefinition<typeof LOGITS_OPTIONS> = {
  name: "logits",
  summary: "print the logits at every position, as JSON",
  description: 'Prints {"logits": [[...], ...]}: one row of vocabulary logits per input position.',
  options: LOGITS_OPTIONS,
  async run(options) {
    const logits = await computeLogits(options.model, options.ids, options.split, options.threads);
    process.stdout.write(JSON.stringify({ logits }) + "\n");
    return 0;
  },
};
