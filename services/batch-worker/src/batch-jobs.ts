/**
 * Batch work on BullMQ: the job kinds, what each job carries (one zod schema per kind:
 * every field's type, bounds and default, unknown keys refused by name) and what it
 * returns. Data is checked when a job is submitted and again when a worker takes it
 * (data can reach Redis by other ways than our submitter).
 */
import { z } from "zod";
import { parseOrThrow } from "@tandem/common";
import { RUNTIME_SETTINGS, SAMPLING_LIMITS } from "@tandem/runtime";

export const JOB_KINDS = ["generate", "calibrate", "build-graphs"] as const;
export type JobKind = (typeof JOB_KINDS)[number];

const path = z.string().min(1);
const layer = z.int().min(1).max(65536);
const model = path.meta({ description: "checkpoint directory, as the worker sees it" });

const SAMPLING_SCHEMA = z
  .object({
    temperature: z
      .number()
      .min(SAMPLING_LIMITS.temperature.min)
      .max(SAMPLING_LIMITS.temperature.max)
      .meta({ description: "0 is greedy" }),
    topP: z.number().min(SAMPLING_LIMITS.topP.min).max(SAMPLING_LIMITS.topP.max).default(1),
    seed: z.int().min(0).default(0),
    topK: z
      .int()
      .min(SAMPLING_LIMITS.topK.min)
      .max(SAMPLING_LIMITS.topK.max)
      .default(0)
      .meta({ description: "0 keeps every token" }),
    repetitionPenalty: z
      .number()
      .min(SAMPLING_LIMITS.repetitionPenalty.min)
      .max(SAMPLING_LIMITS.repetitionPenalty.max)
      .optional()
      .meta({ description: "1 or absent: none" }),
    presencePenalty: z
      .number()
      .min(SAMPLING_LIMITS.presencePenalty.min)
      .max(SAMPLING_LIMITS.presencePenalty.max)
      .optional(),
    frequencyPenalty: z
      .number()
      .min(SAMPLING_LIMITS.frequencyPenalty.min)
      .max(SAMPLING_LIMITS.frequencyPenalty.max)
      .optional(),
  })
  .strict();

/** Continue many prompts with one loaded model, split as the edge and cloud would run it. */
const GENERATE_JOB_SCHEMA = z
  .object({
    model,
    prompts: z.array(z.string().min(1)).min(1).max(10_000).meta({ description: "texts to continue" }),
    maxTokens: RUNTIME_SETTINGS.maxTokens.meta({ description: "tokens per prompt" }),
    calibration: path.optional().meta({
      description:
        "split as an edge and a cloud would: the calibration's split, exits and thresholds (else the whole model)",
    }),
    target: RUNTIME_SETTINGS.target,
    sampling: SAMPLING_SCHEMA.optional().meta({
      description:
        "{temperature, topP, seed, topK, repetitionPenalty, presencePenalty, frequencyPenalty}; absent: greedy",
    }),
    weights: RUNTIME_SETTINGS.weights,
  })
  .strict();

/** Fit exit heads and thresholds on a text file and write the calibration file. */
const CALIBRATE_JOB_SCHEMA = z
  .object({
    model,
    split: layer.meta({ description: "layers the edge runs" }),
    exitLayers: z.array(layer).min(1).meta({ description: "exits to calibrate" }),
    textFile: path.meta({ description: "text file to calibrate on" }),
    out: path.meta({ description: "calibration file to write" }),
    targets: z
      .array(z.number().gt(0).lt(1))
      .min(1)
      .optional()
      .meta({ description: "agreement targets (default 0.99, 0.97, 0.95)" }),
    maxTokens: z
      .int()
      .min(128)
      .max(16_777_216)
      .optional()
      .meta({ description: "use at most this many tokens of the text" }),
  })
  .strict();

/** Build (into the graph cache) the segment graphs an edge agent and a cloud worker will load. */
const BUILD_GRAPHS_JOB_SCHEMA = z
  .object({
    model,
    split: layer.meta({ description: "layers the edge runs" }),
    calibration: path.optional().meta({ description: "exit heads from this calibration file" }),
    exitLayers: z
      .array(layer)
      .min(1)
      .optional()
      .meta({ description: "plain exit heads, without a calibration" }),
    weights: RUNTIME_SETTINGS.weights,
    quantBlockSize: RUNTIME_SETTINGS.quantBlockSize,
    int4HeadBits: RUNTIME_SETTINGS.int4HeadBits,
    cacheDir: path.optional().meta({ description: "graph cache directory (default: the worker's)" }),
  })
  .strict();

export const JOB_SCHEMAS = {
  generate: GENERATE_JOB_SCHEMA,
  calibrate: CALIBRATE_JOB_SCHEMA,
  "build-graphs": BUILD_GRAPHS_JOB_SCHEMA,
} as const satisfies Record<JobKind, z.ZodType>;

/** What a submitter sends (defaults may be left out). */
export type JobInputByKind = { [K in JobKind]: z.input<(typeof JOB_SCHEMAS)[K]> };
/** What a worker's handler gets (defaults filled in). */
export type JobDataByKind = { [K in JobKind]: z.output<(typeof JOB_SCHEMAS)[K]> };
export type GenerateJobData = JobDataByKind["generate"];
export type CalibrateJobData = JobDataByKind["calibrate"];
export type BuildGraphsJobData = JobDataByKind["build-graphs"];

export interface GenerateJobResult {
  outputs: { prompt: string; text: string; tokenIds: number[]; edgeTokens: number; cloudTokens: number }[];
  tokens: number;
  /** Share of generated tokens answered at an exit. */
  edgeShare: number;
  ms: number;
}

export interface CalibrateJobResult {
  out: string;
  split: number;
  policies: { target: number; metric: string; edgeShare: number; agreement: number }[];
}

export interface BuildGraphsJobResult {
  edgeGraph: string;
  cloudGraph: string;
  /** Whether each graph was already in the cache. */
  alreadyCached: { edge: boolean; cloud: boolean };
  ms: number;
}

export interface JobResultByKind {
  generate: GenerateJobResult;
  calibrate: CalibrateJobResult;
  "build-graphs": BuildGraphsJobResult;
}

export function isJobKind(value: string): value is JobKind {
  return (JOB_KINDS as readonly string[]).includes(value);
}

/** Checks job data of `kind` and fills in defaults; throws InvalidArgumentError naming the first bad field. */
export function validateJobData<K extends JobKind>(kind: K, data: unknown): JobDataByKind[K] {
  // The prefix only names a value that is not an object at all ("data: must be an object"):
  // fields of an object are named by themselves ("prompts[1]"), not "data.prompts[1]".
  const isObject = typeof data === "object" && data !== null && !Array.isArray(data);
  return parseOrThrow(JOB_SCHEMAS[kind], data, isObject ? "" : "data") as JobDataByKind[K];
}
