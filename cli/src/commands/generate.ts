/** `tandem generate`: generation through the runtime in one process, optionally split with early exits. */
import { z } from "zod";
import { FailedPreconditionError, formatProgress, UsageError } from "@tandem/common";
import {
  AlwaysExitPolicy,
  type ChatMessage,
  ChatTemplate,
  type Checkpoint,
  CONFIDENCE_METRICS,
  IncrementalDecoder,
  LocalUpperSegment,
  SplitGenerator,
  ThresholdExitPolicy,
  Tokenizer,
  RUNTIME_SETTINGS,
  calibratedExitHeads,
  checkCalibrationMatches,
  loadCheckpoint,
  loadLocalSplit,
  calibratedExitPolicy,
  policyForTarget,
  readCalibration,
} from "@tandem/runtime";
import type { CommandDefinition } from "../command.ts";

export const GENERATE_OPTIONS = z
  .object({
    model: z.string().min(1).meta({
      description: "Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json)",
    }),
    prompt: z.string().min(1).meta({ description: "text to continue (with --chat: the user's message)" }),
    chat: z.boolean().default(false).meta({
      description:
        "send the prompt as one user message through the model's chat template, and print the reply",
    }),
    system: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "with --chat: a system message before the user's" }),
    maxTokens: RUNTIME_SETTINGS.maxTokens,
    split: z
      .int()
      .min(1)
      .optional()
      .meta({ description: "run layers [0,S) as the edge segment and [S,L) as the cloud's (default L)" }),
    exitLayers: z
      .array(z.int().min(1))
      .default([])
      .meta({ description: "early exits after these many layers (each ≤ S)" }),
    metric: z.enum(CONFIDENCE_METRICS).default("prob").meta({ description: "exit confidence metric" }),
    threshold: z
      .number()
      .default(0.9)
      .meta({ description: "answer at an exit when prob/margin ≥ T or entropy ≤ T" }),
    calibration: z.string().min(1).optional().meta({
      description: "exit heads and thresholds from 'tandem calibrate' (replaces --metric/--threshold)",
    }),
    target: RUNTIME_SETTINGS.target.meta({
      description: "with --calibration: the agreement target whose thresholds to use",
    }),
    verify: z.enum(["none", "exact"]).default("none").meta({
      description:
        "exact: the cloud segment checks the edge's tokens before they are printed, so the text is the whole model's (needs --split)",
    }),
    weights: RUNTIME_SETTINGS.weights,
    quantBlockSize: RUNTIME_SETTINGS.quantBlockSize,
    int4HeadBits: RUNTIME_SETTINGS.int4HeadBits,
    threads: RUNTIME_SETTINGS.threads,
  })
  .strict();

export type GenerateOptions = z.output<typeof GENERATE_OPTIONS>;

/** Generates and streams text to `write`; returns the generator's statistics. */
export async function runGenerate(
  request: GenerateOptions,
  write: (text: string) => void,
): Promise<SplitGenerator["stats"]> {
  if (request.system !== undefined && !request.chat) throw new UsageError("--system", "goes with --chat");
  const checkpoint = await loadCheckpoint(request.model);
  const tokenizer = await Tokenizer.forCheckpoint(checkpoint);
  const promptIds = request.chat
    ? tokenizer.encode(await renderChat(checkpoint, request))
    : tokenizer.encodePrompt(request.prompt);
  const calibration = request.calibration ? await readCalibration(request.calibration) : undefined;
  if (calibration && request.calibration)
    checkCalibrationMatches(calibration, checkpoint, request.calibration);
  const split = request.split ?? calibration?.summary.split ?? checkpoint.config.numLayers;
  if (request.verify !== "none" && split >= checkpoint.config.numLayers)
    throw new UsageError(
      "--verify",
      "needs a cloud segment to check the tokens: give --split below the model's layers",
    );
  const exits = calibration
    ? calibratedExitHeads(calibration)
    : request.exitLayers.map((afterLayer) => ({ afterLayer }));
  const local = await loadLocalSplit(checkpoint, {
    split,
    exits,
    weightFormat: request.weights,
    quantBlockSize: request.quantBlockSize,
    int4HeadBits: request.int4HeadBits,
    threads: request.threads,
    // A first run on a large checkpoint builds its graphs for minutes: say how far.
    onProgress: (progress) => console.error(formatProgress("model", progress)),
  });
  try {
    const upper = local.upper && new LocalUpperSegment(local.upper, "generate");
    // Without a confident exit the deepest answer wins: the cloud's, or the final head's.
    const policy = calibration
      ? calibratedExitPolicy(calibration, policyForTarget(calibration, request.target))
      : request.exitLayers.length > 0
        ? ThresholdExitPolicy.uniform(request.exitLayers, request.metric, request.threshold)
        : new AlwaysExitPolicy();
    const generator = new SplitGenerator(local.lower, upper, policy);
    const decoder = new IncrementalDecoder(tokenizer);
    for await (const token of generator.tokens(promptIds, {
      maxTokens: request.maxTokens,
      stopTokenIds: checkpoint.config.eosTokenId,
      verify: request.verify,
    }))
      write(decoder.push(token.token));
    write(decoder.flush());
    return generator.stats;
  } finally {
    await local.release();
  }
}

/**
 * The prompt (and the system message) as the model's chat template renders them, ready to
 * encode as is: the template writes BOS and the other special tokens itself.
 */
async function renderChat(checkpoint: Checkpoint, request: GenerateOptions): Promise<string> {
  const template = await ChatTemplate.find(checkpoint.dir);
  if (!template)
    throw new FailedPreconditionError(
      "--chat",
      `${checkpoint.dir} has no chat template (neither chat_template.jinja nor a chat_template in tokenizer_config.json)`,
    );
  const messages: ChatMessage[] = [
    ...(request.system ? [{ role: "system", content: request.system }] : []),
    { role: "user", content: request.prompt },
  ];
  return template.render(messages, { field: "--prompt" });
}

export const generateCommand: CommandDefinition<typeof GENERATE_OPTIONS> = {
  name: "generate",
  summary: "continue a prompt with a model, optionally split with early exits",
  description:
    "Continues the prompt greedily through the runtime in this process; with --split, as an edge and a cloud\nsegment would (the cloud's through the escalation protocol). Prints the text; statistics go to stderr as JSON.\nWith --chat, the prompt is a user message rendered with the model's chat template, and the reply alone is printed.",
  options: GENERATE_OPTIONS,
  async run(options) {
    // A continuation reads on from the prompt; a chat reply stands alone.
    if (!options.chat) process.stdout.write(options.prompt);
    const stats = await runGenerate(options, (text) => process.stdout.write(text));
    process.stdout.write("\n");
    console.error(JSON.stringify({ stats }));
    return 0;
  },
};
