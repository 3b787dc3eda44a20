/**
 * Batch work on BullMQ: the job kinds, what each job carries and returns, and the checks
 * that turn bad job data into an error naming the field, both when a job is submitted
 * and when a worker takes it (data can reach Redis by other ways than our submitter).
 */
import { InvalidArgumentError } from "@tandem/common";

export const JOB_KINDS = ["generate", "calibrate", "build-graphs"] as const;
export type JobKind = (typeof JOB_KINDS)[number];

export const WEIGHT_FORMATS = ["fp32", "int8", "int4"] as const;
export type JobWeightFormat = (typeof WEIGHT_FORMATS)[number];

/** Continue many prompts with one loaded model, split as the edge and cloud would run it. */
export interface GenerateJobData {
  /** Checkpoint directory, as the worker sees it. */
  model: string;
  prompts: string[];
  /** @default 64 */
  maxTokens?: number;
  /** Calibration file: its split, exit heads and the thresholds of `target`. Without it: the whole model. */
  calibration?: string;
  /** @default 0.99 */
  target?: number;
  /** Sampling; absent or temperature 0 is greedy. */
  sampling?: { temperature: number; topP?: number; seed?: number };
  /** @default "fp32" */
  weights?: JobWeightFormat;
}

export interface GenerateJobResult {
  outputs: { prompt: string; text: string; tokenIds: number[]; edgeTokens: number; cloudTokens: number }[];
  tokens: number;
  /** Share of generated tokens answered at an exit. */
  edgeShare: number;
  ms: number;
}

/** Fit exit heads and thresholds on a text file and write the calibration file. */
export interface CalibrateJobData {
  model: string;
  split: number;
  exitLayers: number[];
  /** Text file to calibrate on. */
  textFile: string;
  /** Calibration file to write. */
  out: string;
  targets?: number[];
  maxTokens?: number;
}

export interface CalibrateJobResult {
  out: string;
  split: number;
  policies: { target: number; metric: string; edgeShare: number; agreement: number }[];
}

/** Build (into the graph cache) the segment graphs an edge agent and a cloud worker will load. */
export interface BuildGraphsJobData {
  model: string;
  split: number;
  /** Exit heads from this calibration file; else `exitLayers` (plain heads). */
  calibration?: string;
  exitLayers?: number[];
  /** @default "fp32" */
  weights?: JobWeightFormat;
  /** Graph cache directory. @default the worker's */
  cacheDir?: string;
}

export interface BuildGraphsJobResult {
  edgeGraph: string;
  cloudGraph: string;
  /** Whether each graph was already in the cache. */
  alreadyCached: { edge: boolean; cloud: boolean };
  ms: number;
}

export interface JobDataByKind {
  generate: GenerateJobData;
  calibrate: CalibrateJobData;
  "build-graphs": BuildGraphsJobData;
}

export interface JobResultByKind {
  generate: GenerateJobResult;
  calibrate: CalibrateJobResult;
  "build-graphs": BuildGraphsJobResult;
}

export function isJobKind(value: string): value is JobKind {
  return (JOB_KINDS as readonly string[]).includes(value);
}

/** Checks job data of `kind`; throws InvalidArgumentError naming the first bad field. */
export function validateJobData<K extends JobKind>(kind: K, data: unknown): JobDataByKind[K] {
  const record = asRecord(data, "data");
  switch (kind) {
    case "generate": {
      text(record, "model");
      const prompts = record.prompts;
      if (!Array.isArray(prompts) || prompts.length === 0)
        throw new InvalidArgumentError("prompts", "must be a non-empty list of strings");
      prompts.forEach((p, i) => {
        if (typeof p !== "string" || p.length === 0)
          throw new InvalidArgumentError(`prompts[${i}]`, "must be a non-empty string");
      });
      integer(record, "maxTokens", 1, 4096, false);
      optionalText(record, "calibration");
      number(record, "target", 0, 1, false);
      weights(record);
      if (record.sampling !== undefined) {
        const sampling = asRecord(record.sampling, "sampling");
        number(sampling, "temperature", 0, 10, true, "sampling.temperature");
        number(sampling, "topP", 0, 1, false, "sampling.topP");
        integer(sampling, "seed", 0, Number.MAX_SAFE_INTEGER, false, "sampling.seed");
      }
      break;
    }
    case "calibrate": {
      text(record, "model");
      integer(record, "split", 1, 1 << 16, true);
      integerList(record, "exitLayers", true);
      text(record, "textFile");
      text(record, "out");
      if (record.targets !== undefined) {
        if (!Array.isArray(record.targets) || record.targets.length === 0)
          throw new InvalidArgumentError("targets", "must be a non-empty list of numbers in (0, 1)");
        record.targets.forEach((t, i) => {
          if (typeof t !== "number" || !(t > 0 && t < 1))
            throw new InvalidArgumentError(
              `targets[${i}]`,
              `must be a number in (0, 1), got ${JSON.stringify(t)}`,
            );
        });
      }
      integer(record, "maxTokens", 128, 1 << 24, false);
      break;
    }
    case "build-graphs": {
      text(record, "model");
      integer(record, "split", 1, 1 << 16, true);
      optionalText(record, "calibration");
      integerList(record, "exitLayers", false);
      weights(record);
      optionalText(record, "cacheDir");
      break;
    }
    default:
      throw new InvalidArgumentError(
        "kind",
        `must be one of ${JOB_KINDS.join(", ")}, got ${JSON.stringify(kind)}`,
      );
  }
  return record as unknown as JobDataByKind[K];
}

function asRecord(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new InvalidArgumentError(field, "must be an object");
  return value as Record<string, unknown>;
}

function text(record: Record<string, unknown>, key: string): void {
  if (typeof record[key] !== "string" || (record[key] as string).length === 0)
    throw new InvalidArgumentError(key, "is required (a non-empty string)");
}

function optionalText(record: Record<string, unknown>, key: string): void {
  if (record[key] !== undefined) text(record, key);
}

function weights(record: Record<string, unknown>): void {
  if (record.weights !== undefined && !(WEIGHT_FORMATS as readonly unknown[]).includes(record.weights))
    throw new InvalidArgumentError(
      "weights",
      `must be one of ${WEIGHT_FORMATS.join(", ")}, got ${JSON.stringify(record.weights)}`,
    );
}

function number(
  record: Record<string, unknown>,
  key: string,
  min: number,
  max: number,
  required: boolean,
  field = key,
): void {
  const value = record[key];
  if (value === undefined) {
    if (required) throw new InvalidArgumentError(field, "is required");
    return;
  }
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max)
    throw new InvalidArgumentError(
      field,
      `must be a number in [${min}, ${max}], got ${JSON.stringify(value)}`,
    );
}

function integer(
  record: Record<string, unknown>,
  key: string,
  min: number,
  max: number,
  required: boolean,
  field = key,
): void {
  number(record, key, min, max, required, field);
  if (record[key] !== undefined && !Number.isInteger(record[key]))
    throw new InvalidArgumentError(field, `must be an integer, got ${JSON.stringify(record[key])}`);
}

function integerList(record: Record<string, unknown>, key: string, required: boolean): void {
  const value = record[key];
  if (value === undefined) {
    if (required) throw new InvalidArgumentError(key, "is required (a list of layer numbers)");
    return;
  }
  if (!Array.isArray(value) || value.length === 0)
    throw new InvalidArgumentError(key, "must be a non-empty list of integers");
  value.forEach((v, i) => {
    if (!Number.isInteger(v) || (v as number) < 1)
      throw new InvalidArgumentError(`${key}[${i}]`, `must be a positive integer, got ${JSON.stringify(v)}`);
  });
}
