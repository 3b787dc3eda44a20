/**
 * Batch work on BullMQ: the job kinds, what each job carries (one zod schema per kind:
 * every field's type, bounds and default, unknown keys refused by name) and what it
 * returns. Data is checked when a job is submitted and again when a worker takes it
 * (data can reach Redis by other ways than our submitter).
 */
import { z } from "zod";
import { parseOrThrow } from "@tandem/common";
import { SAMPLING_LIMITS, WEIGHT_FORMATS } from "@tandem/runtime";

export const JOB_KINDS = ["generate", "calibrate", "build-graphs"] as const;
export type JobKind = (typeof JOB_KINDS)[number];

const path = z.string().min(1);
const layer = z
  .int()
  .min(1)
  .max(1 << 16);

const SAMPLING_SCHEMA = z
  .object({
    temperature: z.number().min(SAMPLING_LIMITS.temperature.min).max(SAMPLING_LIMITS.temperature.max),
    topP: z.number().min(SAMPLING_LIMITS.topP.min).max(SAMPLING_LIMITS.topP.max).default(1),
    seed: z.int().min(0).default(0),
  })
  .strict();

/** Continue many prompts with one loaded model, split as the edge and cloud would run it. */
export const GENERATE_JOB_SCHEMA = z
  .object({
    /** Checkpoint directory, as the worker sees it. */
    model: path,
    prompts: z.array(z.string().min(1)).min(1).max(10_000),
    maxTokens: z.int().min(1).max(4096).default(64),
    /** Calibration file: its split, exit heads and the thresholds of `target`. Without it: the whole model. */
    calibration: path.optional(),
    target: z.number().gt(0).max(1).default(0.99),
    /** Absent, or temperature 0: greedy. */
    sampling: SAMPLING_SCHEMA.optional(),
    weights: z.enum(WEIGHT_FORMATS).default("fp32"),
  })
  .strict();

/** Fit exit heads and thresholds on a text file and write the calibration file. */
export const CALIBRATE_JOB_SCHEMA = z
  .object({
    model: path,
    split: layer,
    exitLayers: z.array(layer).min(1),
    /** Text file to calibrate on. */
    textFile: path,
    /** Calibration file to write. */
    out: path,
    targets: z.array(z.number().gt(0).lt(1)).min(1).optional(),
    maxTokens: z
      .int()
      .min(128)
      .max(1 << 24)
      .optional(),
  })
  .strict();

/** Build (into the graph cache) the segment graphs an edge agent and a cloud worker will load. */
export const BUILD_GRAPHS_JOB_SCHEMA = z
  .object({
    model: path,
    split: layer,
    /** Exit heads from this calibration file; else `exitLayers` (plain heads). */
    calibration: path.optional(),
    exitLayers: z.array(layer).min(1).optional(),
    weights: z.enum(WEIGHT_FORMATS).default("fp32"),
    /** Graph cache directory. Default: the worker's. */
    cacheDir: path.optional(),
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
  if (typeof data !== "object" || data === null || Array.isArray(data))
    return parseOrThrow(JOB_SCHEMAS[kind], data, "data") as JobDataByKind[K];
  return parseOrThrow(JOB_SCHEMAS[kind], data) as JobDataByKind[K];
}
