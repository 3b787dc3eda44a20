/**
 * What the batch worker does for each job kind, with the runtime: load the model once per
 * job, report progress, return a JSON-safe result. Bad data or files surface as runtime
 * errors naming the field or file; the worker decides whether to retry.
 */
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import {
  calibratedExitHeads,
  checkCalibrationMatches,
  policyForTarget,
  readCalibration,
  writeCalibration,
} from "@tandem/runtime";
import { calibrate } from "@tandem/runtime";
import { loadCheckpoint } from "@tandem/runtime";
import type { Checkpoint } from "@tandem/runtime";
import { InvalidArgumentError } from "@tandem/common";
import { AlwaysExitPolicy, ThresholdExitPolicy } from "@tandem/runtime";
import { loadLocalSplit } from "@tandem/runtime";
import { GREEDY, type SamplingOptions } from "@tandem/runtime";
import { LocalUpperSegment, SplitGenerator } from "@tandem/runtime";
import { cloudSegmentSpec, edgeSegmentSpec } from "@tandem/runtime";
import { defaultGraphCacheDir, ensureSegmentGraph, segmentGraphPath } from "@tandem/runtime";
import { IncrementalDecoder, Tokenizer } from "@tandem/runtime";
import type {
  BuildGraphsJobData,
  BuildGraphsJobResult,
  CalibrateJobData,
  CalibrateJobResult,
  GenerateJobData,
  GenerateJobResult,
} from "./batch-jobs.ts";

export interface JobContext {
  /** Reports progress in [0, 1]. */
  progress(fraction: number): Promise<void>;
  threads: number;
  cacheDir?: string;
}

async function tokenizerOf(checkpoint: Checkpoint, model: string): Promise<Tokenizer> {
  if (!checkpoint.tokenizerPath) throw new InvalidArgumentError("model", `${model} has no tokenizer.json`);
  return Tokenizer.fromFile(checkpoint.tokenizerPath);
}

export async function runGenerateJob(data: GenerateJobData, context: JobContext): Promise<GenerateJobResult> {
  const started = performance.now();
  const checkpoint = await loadCheckpoint(data.model);
  const tokenizer = await tokenizerOf(checkpoint, data.model);
  const calibration = data.calibration ? await readCalibration(data.calibration) : undefined;
  if (calibration) checkCalibrationMatches(calibration, checkpoint, data.calibration!);
  const local = await loadLocalSplit(checkpoint, {
    split: calibration?.summary.split,
    exits: calibration ? calibratedExitHeads(calibration) : [],
    weightFormat: data.weights ?? "fp32",
    threads: context.threads,
    cacheDir: context.cacheDir,
  });
  const sampling: SamplingOptions = data.sampling
    ? {
        temperature: data.sampling.temperature,
        topP: data.sampling.topP ?? 1,
        seed: BigInt(data.sampling.seed ?? 0),
      }
    : GREEDY;
  try {
    const outputs: GenerateJobResult["outputs"] = [];
    for (const [i, prompt] of data.prompts.entries()) {
      const sessionId = `prompt-${i}`;
      const upper = local.upper && new LocalUpperSegment(local.upper, sessionId);
      const policy = calibration
        ? new ThresholdExitPolicy(policyForTarget(calibration, data.target ?? 0.99).thresholds)
        : new AlwaysExitPolicy();
      const generator = new SplitGenerator(local.lower, upper, policy, sessionId);
      const decoder = new IncrementalDecoder(tokenizer);
      let text = "";
      const tokenIds: number[] = [];
      for await (const token of generator.generate(tokenizer.encode(prompt), {
        maxTokens: data.maxTokens ?? 64,
        stopTokenIds: checkpoint.config.eosTokenId,
        sampling,
      })) {
        tokenIds.push(token.token);
        text += decoder.push(token.token);
      }
      text += decoder.flush();
      await upper?.close();
      outputs.push({
        prompt,
        text,
        tokenIds,
        edgeTokens: generator.stats.edgeTokens,
        cloudTokens: generator.stats.cloudTokens,
      });
      await context.progress((i + 1) / data.prompts.length);
    }
    const tokens = outputs.reduce((sum, o) => sum + o.tokenIds.length, 0);
    const edge = outputs.reduce((sum, o) => sum + o.edgeTokens, 0);
    return { outputs, tokens, edgeShare: tokens ? edge / tokens : 0, ms: performance.now() - started };
  } finally {
    await local.release();
  }
}

export async function runCalibrateJob(
  data: CalibrateJobData,
  context: JobContext,
): Promise<CalibrateJobResult> {
  const checkpoint = await loadCheckpoint(data.model);
  const tokenizer = await tokenizerOf(checkpoint, data.model);
  const text = await readFile(data.textFile, "utf8").catch((error: Error) => {
    throw new InvalidArgumentError("textFile", `cannot read ${data.textFile} (${error.message})`);
  });
  let windowsDone = 0;
  const calibration = await calibrate(checkpoint, tokenizer, {
    split: data.split,
    exitLayers: data.exitLayers,
    text,
    targets: data.targets,
    maxTokens: data.maxTokens,
    threads: context.threads,
    cacheDir: context.cacheDir,
    onProgress: (message) => {
      // "… n/m windows" lines: progress through the forward passes, most of the work.
      const match = / (\d+)\/(\d+) windows/.exec(message);
      if (match && Number(match[1]) !== windowsDone) {
        windowsDone = Number(match[1]);
        void context.progress((0.9 * windowsDone) / Number(match[2]));
      }
    },
  });
  await writeCalibration(data.out, calibration).catch((error: Error) => {
    // A path that cannot be written stays unwritable on a retry.
    throw new InvalidArgumentError("out", `cannot write ${data.out} (${error.message})`);
  });
  await context.progress(1);
  return {
    out: data.out,
    split: calibration.summary.split,
    policies: calibration.summary.policies.map((p) => ({
      target: p.targetAgreement,
      metric: p.metric,
      edgeShare: p.test.edgeShare,
      agreement: p.test.agreement,
    })),
  };
}

export async function runBuildGraphsJob(
  data: BuildGraphsJobData,
  context: JobContext,
): Promise<BuildGraphsJobResult> {
  const started = performance.now();
  const checkpoint = await loadCheckpoint(data.model);
  const layers = checkpoint.config.numLayers;
  if (data.split >= layers)
    throw new InvalidArgumentError(
      "split",
      `must be in [1, ${layers - 1}] for a ${layers}-layer model, got ${data.split}`,
    );
  const calibration = data.calibration ? await readCalibration(data.calibration) : undefined;
  if (calibration) {
    checkCalibrationMatches(calibration, checkpoint, data.calibration!);
    if (calibration.summary.split !== data.split)
      throw new InvalidArgumentError(
        "split",
        `${data.split} differs from the calibration's split ${calibration.summary.split}`,
      );
  }
  const exits = calibration
    ? calibratedExitHeads(calibration)
    : (data.exitLayers ?? []).map((afterLayer) => ({ afterLayer }));
  const weights = data.weights ?? "fp32";
  const cacheDir = data.cacheDir ?? context.cacheDir ?? defaultGraphCacheDir();
  const specs = {
    edge: edgeSegmentSpec(data.split, exits, weights),
    cloud: cloudSegmentSpec(data.split, layers, weights),
  };
  const cached = (spec: typeof specs.edge) => existsSync(segmentGraphPath(checkpoint, spec, cacheDir));
  const alreadyCached = { edge: cached(specs.edge), cloud: cached(specs.cloud) };
  const build = (spec: typeof specs.edge) =>
    ensureSegmentGraph(checkpoint, spec, cacheDir).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "EACCES" || error.code === "ENOTDIR" || error.code === "EROFS")
        throw new InvalidArgumentError("cacheDir", `cannot write graphs to ${cacheDir} (${error.message})`);
      throw error;
    });
  const edgeGraph = await build(specs.edge);
  await context.progress(0.5);
  const cloudGraph = await build(specs.cloud);
  await context.progress(1);
  return { edgeGraph, cloudGraph, alreadyCached, ms: performance.now() - started };
}
