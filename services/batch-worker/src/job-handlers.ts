/**
 * What the batch worker does for each job kind, with the runtime: load the model once per
 * job, report progress, return a JSON-safe result. Bad data or files surface as runtime
 * errors naming the field or file; the worker decides whether to retry.
 */
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import {
  AlwaysExitPolicy,
  calibrate,
  calibratedExitHeads,
  checkCalibrationMatches,
  cloudSegmentSpec,
  defaultGraphCacheDir,
  edgeSegmentSpec,
  ensureSegmentGraph,
  GREEDY,
  IncrementalDecoder,
  loadCheckpoint,
  loadLocalSplit,
  LocalUpperSegment,
  calibratedExitPolicy,
  policyForTarget,
  readCalibration,
  type SamplingOptions,
  segmentGraphPath,
  SplitGenerator,
  Tokenizer,
  writeCalibration,
  calibrationOutputProblem,
} from "@tandem/runtime";
import { GraphIoError, InvalidArgumentError, type Progress } from "@tandem/common";
import type {
  BuildGraphsJobData,
  BuildGraphsJobResult,
  CalibrateJobData,
  CalibrateJobResult,
  GenerateJobData,
  GenerateJobResult,
} from "./batch-jobs.ts";

export interface JobContext {
  /** Reports how far the job is (stored as the job's progress). */
  progress(progress: Progress): Promise<void>;
  threads: number;
  cacheDir?: string;
}

export async function runGenerateJob(data: GenerateJobData, context: JobContext): Promise<GenerateJobResult> {
  const started = performance.now();
  const checkpoint = await loadCheckpoint(data.model);
  const tokenizer = await Tokenizer.forCheckpoint(checkpoint);
  const calibration = data.calibration ? await readCalibration(data.calibration) : undefined;
  if (calibration) checkCalibrationMatches(calibration, checkpoint, data.calibration!);
  const local = await loadLocalSplit(checkpoint, {
    split: calibration?.summary.split,
    exits: calibration ? calibratedExitHeads(calibration) : [],
    weightFormat: data.weights,
    threads: context.threads,
    cacheDir: context.cacheDir,
  });
  const sampling: SamplingOptions = data.sampling
    ? {
        temperature: data.sampling.temperature,
        topP: data.sampling.topP,
        seed: BigInt(data.sampling.seed),
        topK: data.sampling.topK,
        repetitionPenalty: data.sampling.repetitionPenalty,
        presencePenalty: data.sampling.presencePenalty,
        frequencyPenalty: data.sampling.frequencyPenalty,
      }
    : GREEDY;
  try {
    const outputs: GenerateJobResult["outputs"] = [];
    for (const [i, prompt] of data.prompts.entries()) {
      const sessionId = `prompt-${i}`;
      const upper = local.upper && new LocalUpperSegment(local.upper, sessionId);
      const policy = calibration
        ? calibratedExitPolicy(calibration, policyForTarget(calibration, data.target))
        : new AlwaysExitPolicy();
      const generator = new SplitGenerator(local.lower, upper, policy, sessionId);
      const decoder = new IncrementalDecoder(tokenizer);
      let text = "";
      const tokenIds: number[] = [];
      for await (const token of generator.tokens(tokenizer.encodePrompt(prompt), {
        maxTokens: data.maxTokens,
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
      await context.progress({ phase: "prompts", done: i + 1, total: data.prompts.length });
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
  // A path that cannot be written is refused before the calibration, not after it.
  const outputProblem = await calibrationOutputProblem(data.out);
  if (outputProblem) throw new InvalidArgumentError("out", outputProblem);
  const checkpoint = await loadCheckpoint(data.model);
  const tokenizer = await Tokenizer.forCheckpoint(checkpoint);
  const text = await readFile(data.textFile, "utf8").catch((error: Error) => {
    throw new InvalidArgumentError("textFile", `cannot read ${data.textFile} (${error.message})`);
  });
  const calibration = await calibrate(checkpoint, tokenizer, {
    split: data.split,
    exitLayers: data.exitLayers,
    text,
    targets: data.targets,
    maxTokens: data.maxTokens,
    threads: context.threads,
    cacheDir: context.cacheDir,
    // Progress as calibrate reports it; the notes stay with the result, not in Redis on every step.
    onProgress: ({ phase, done, total }) => void context.progress({ phase, done, total }),
  });
  await writeCalibration(data.out, calibration).catch((error: Error) => {
    // A path that cannot be written stays unwritable on a retry.
    throw new InvalidArgumentError("out", `cannot write ${data.out} (${error.message})`);
  });
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
  const weights = data.weights;
  const cacheDir = data.cacheDir ?? context.cacheDir ?? defaultGraphCacheDir();
  const specs = {
    edge: edgeSegmentSpec(data.split, exits, weights, data),
    cloud: cloudSegmentSpec(data.split, layers, weights, data),
  };
  const cached = (spec: typeof specs.edge) => existsSync(segmentGraphPath(checkpoint, spec, cacheDir));
  const alreadyCached = { edge: cached(specs.edge), cloud: cached(specs.cloud) };
  const build = (spec: typeof specs.edge) =>
    ensureSegmentGraph(checkpoint, spec, cacheDir, (progress) => void context.progress(progress)).catch(
      (error: unknown) => {
        // A directory that cannot be written stays so on a retry: the job's field is wrong.
        const code = error instanceof GraphIoError ? (error.cause as NodeJS.ErrnoException).code : undefined;
        if (code === "EACCES" || code === "ENOTDIR" || code === "EROFS" || code === "EEXIST")
          throw new InvalidArgumentError(
            "cacheDir",
            `cannot write graphs to ${cacheDir} (${(error as Error).message})`,
          );
        throw error;
      },
    );
  const edgeGraph = await build(specs.edge);
  await context.progress({ phase: "graphs", done: 1, total: 2 });
  const cloudGraph = await build(specs.cloud);
  await context.progress({ phase: "graphs", done: 2, total: 2 });
  return { edgeGraph, cloudGraph, alreadyCached, ms: performance.now() - started };
}
