/** `tandem generate`: greedy generation through the runtime, optionally split with early exits. */
import { parseArgs } from "node:util";
import {
  AlwaysExitPolicy,
  calibratedExitHeads,
  checkCalibrationMatches,
  type ConfidenceMetric,
  IncrementalDecoder,
  loadCheckpoint,
  loadLocalSplit,
  LocalUpperSegment,
  policyForTarget,
  readCalibration,
  SplitGenerator,
  ThresholdExitPolicy,
  Tokenizer,
  type WeightFormat,
} from "@tandem/runtime";
import { UsageError } from "@tandem/common";
import { parseIntegerList, parseIntegerOption, parseNumberOption, requireOption } from "../cli-options.ts";

const HELP = `usage: tandem generate --model DIR --prompt TEXT [options]

  --model DIR          Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json)
  --prompt TEXT        text to continue
  --max-tokens N       tokens to generate (default 64)
  --split S            run layers [0,S) as the edge segment and [S,L) as the cloud segment (default L)
  --exit-layers a,b    early exits after these many layers (each ≤ S)
  --metric M           exit confidence metric: prob, margin or entropy (default prob)
  --threshold T        answer at an exit when prob/margin ≥ T or entropy ≤ T (default 0.9)
  --calibration FILE   exit heads and thresholds from 'tandem calibrate' (replaces --metric/--threshold)
  --target A           with --calibration: the agreement target whose thresholds to use (default 0.99)
  --weights F          fp32, int8 or int4 (default fp32)
  --threads N          ONNX Runtime threads (default 1)`;

export interface GenerateRequest {
  model: string;
  prompt: string;
  maxTokens: number;
  split?: number;
  exitLayers: number[];
  metric: ConfidenceMetric;
  threshold: number;
  weights: WeightFormat;
  threads: number;
  calibration?: string;
  target?: number;
}

export function parseGenerateArgs(args: string[]): GenerateRequest | undefined {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      prompt: { type: "string" },
      "max-tokens": { type: "string" },
      split: { type: "string" },
      "exit-layers": { type: "string" },
      metric: { type: "string" },
      threshold: { type: "string" },
      weights: { type: "string" },
      threads: { type: "string" },
      calibration: { type: "string" },
      target: { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const metric = values.metric ?? "prob";
  if (metric !== "prob" && metric !== "margin" && metric !== "entropy") {
    throw new UsageError("--metric", `must be prob, margin or entropy, got "${metric}"`);
  }
  const weights = values.weights ?? "fp32";
  if (weights !== "fp32" && weights !== "int8" && weights !== "int4") {
    throw new UsageError("--weights", `must be fp32, int8 or int4, got "${weights}"`);
  }
  return {
    model: requireOption("--model", values.model),
    prompt: requireOption("--prompt", values.prompt),
    maxTokens: parseIntegerOption("--max-tokens", values["max-tokens"], 64, 1),
    split: values.split === undefined ? undefined : parseIntegerOption("--split", values.split, 0, 1),
    exitLayers: parseIntegerList("--exit-layers", values["exit-layers"]) ?? [],
    metric,
    threshold: parseNumberOption("--threshold", values.threshold, 0.9),
    weights,
    threads: parseIntegerOption("--threads", values.threads, 1, 1),
    calibration: values.calibration,
    target: values.target === undefined ? undefined : parseNumberOption("--target", values.target, 0.99),
  };
}

/** Generates and streams text to `write`; returns the generator's statistics. */
export async function runGenerate(
  request: GenerateRequest,
  write: (text: string) => void,
): Promise<SplitGenerator["stats"]> {
  const checkpoint = await loadCheckpoint(request.model);
  if (!checkpoint.tokenizerPath) throw new UsageError("--model", `${request.model} has no tokenizer.json`);
  const tokenizer = await Tokenizer.fromFile(checkpoint.tokenizerPath);
  const calibration = request.calibration ? await readCalibration(request.calibration) : undefined;
  if (calibration && request.calibration)
    checkCalibrationMatches(calibration, checkpoint, request.calibration);
  const split = request.split ?? calibration?.summary.split ?? checkpoint.config.numLayers;
  const exits = calibration
    ? calibratedExitHeads(calibration)
    : request.exitLayers.map((afterLayer) => ({ afterLayer }));
  const local = await loadLocalSplit(checkpoint, {
    split,
    exits,
    weightFormat: request.weights,
    threads: request.threads,
  });
  try {
    const upper = local.upper && new LocalUpperSegment(local.upper, "generate");
    // Without a confident exit the deepest answer wins: the cloud's, or the final head's.
    const policy = calibration
      ? new ThresholdExitPolicy(policyForTarget(calibration, request.target ?? 0.99).thresholds)
      : request.exitLayers.length > 0
        ? ThresholdExitPolicy.uniform(request.exitLayers, request.metric, request.threshold)
        : new AlwaysExitPolicy();
    const generator = new SplitGenerator(local.lower, upper, policy);
    const decoder = new IncrementalDecoder(tokenizer);
    const promptIds = tokenizer.encode(request.prompt);
    for await (const token of generator.generate(promptIds, {
      maxTokens: request.maxTokens,
      stopTokenIds: checkpoint.config.eosTokenId,
    })) {
      write(decoder.push(token.token));
    }
    write(decoder.flush());
    return generator.stats;
  } finally {
    await local.release();
  }
}

export const generateCommand = {
  summary: "generate text",
  async run(args: string[]): Promise<number> {
    const request = parseGenerateArgs(args);
    if (!request) {
      console.log(HELP);
      return 0;
    }
    process.stdout.write(request.prompt);
    const stats = await runGenerate(request, (text) => process.stdout.write(text));
    process.stdout.write("\n");
    console.error(JSON.stringify({ stats }));
    return 0;
  },
};
