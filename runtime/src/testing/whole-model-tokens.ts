/**
 * What a checkpoint's whole model says, greedily, after a prompt: the uninterrupted run
 * that tests compare a split, a failover or a redirect with.
 */
import { AlwaysExitPolicy } from "../exits/exit-policy.ts";
import { loadCheckpoint } from "../checkpoint/load-checkpoint.ts";
import { loadLocalSplit } from "../generation/local-split.ts";
import { SplitGenerator } from "../generation/split-generator.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";

/** Greedy tokens of the whole model after `prompt` (text, through the checkpoint's tokenizer, or ids). */
export async function wholeModelTokens(
  modelDir: string,
  prompt: string | number[],
  maxTokens: number,
  options: { cacheDir?: string } = {},
): Promise<number[]> {
  const checkpoint = await loadCheckpoint(modelDir);
  const ids =
    typeof prompt === "string" ? (await Tokenizer.forCheckpoint(checkpoint)).encode(prompt) : prompt;
  const whole = await loadLocalSplit(checkpoint, { cacheDir: options.cacheDir });
  try {
    const tokens: number[] = [];
    for await (const t of new SplitGenerator(whole.lower, undefined, new AlwaysExitPolicy()).tokens(ids, {
      maxTokens,
    }))
      tokens.push(t.token);
    return tokens;
  } finally {
    await whole.release();
  }
}
