/**
 * The calibration file an edge agent loads: one safetensors file holding the fitted
 * exit maps as tensors (`exit.K.linear.weight` [hidden, hidden], `exit.K.linear.bias`)
 * and everything else — which head each exit uses, the chosen thresholds per target
 * agreement, the whole agreement-vs-edge-share curve — as JSON in the metadata entry
 * `tandem.calibration`.
 */
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { z } from "zod";
import { CheckpointError, InvalidArgumentError, parseOrThrow } from "@tandem/common";
import { EXIT_METRICS, ThresholdExitPolicy } from "../exits/exit-policy.ts";
import {
  confidenceFeatureNames,
  previousExitLayer,
  quadraticTermCount,
  type ConfidenceModel,
} from "../exits/confidence-model.ts";
import type { ExitHeadSpec } from "../graph/segment-spec.ts";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../checkpoint/safetensors.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";

export const CALIBRATION_METADATA_KEY = "tandem.calibration";
export const CALIBRATION_VERSION = 1;

const SHARE = z.number().min(0).max(1);
const METRIC = z.enum(EXIT_METRICS);
const LAYER = z.int().min(1);

const EXIT_HEAD_CHOICE_SCHEMA = z.object({
  afterLayer: LAYER,
  head: z.enum(["plain", "linear"]),
  /** Agreement of each head's top-1 with the full model on held-out text (test split). */
  heldOutAgreement: z.object({ plain: SHARE, linear: SHARE }),
  /** Share of tokens each head answers alone at the strictest target (tuning split): the choice. */
  tuneEdgeShare: z.object({ plain: SHARE, linear: SHARE }),
});

/**
 * An exit's confidence model (exits/confidence-model.ts): `features` standardised by `mean`
 * and `scale`, `weights` on them and their pairwise products.
 */
const CONFIDENCE_MODEL_SCHEMA = z.object({
  afterLayer: LAYER,
  previousLayer: LAYER.optional(),
  features: z.array(z.string()),
  mean: z.array(z.number()),
  scale: z.array(z.number()),
  weights: z.array(z.number()),
  bias: z.number(),
  /** Positions it was fitted on (fit split) and the share of them where the exit agreed. */
  fitPositions: z.int().min(0),
  fitAgreement: SHARE,
});

const CALIBRATED_POLICY_SCHEMA = z.object({
  targetAgreement: SHARE,
  metric: METRIC,
  thresholds: z.array(z.object({ afterLayer: LAYER, metric: METRIC, threshold: z.number() })),
  /** Measured on the tuning split (where thresholds were chosen) and on the test split. */
  tune: z.object({ edgeShare: SHARE, agreement: SHARE }),
  test: z.object({
    edgeShare: SHARE,
    agreement: SHARE,
    /** exit layer → share of tokens it answered. */
    perExit: z.record(z.string().regex(/^\d+$/), SHARE),
  }),
});

const CURVE_POINT_SCHEMA = z.object({
  heads: z.enum(["plain", "calibrated"]),
  /** The exits the policy may answer at. */
  exits: z.array(LAYER),
  metric: METRIC,
  targetAgreement: SHARE,
  edgeShare: SHARE,
  agreement: SHARE,
});

/** The JSON in a calibration file's metadata; a file that breaks it is a CheckpointError naming the field. */
const CALIBRATION_SUMMARY_SCHEMA = z.object({
  version: z.literal(CALIBRATION_VERSION),
  model: z.object({
    weightsHash: z.string().min(1),
    /** The exit adapters the exits ran with (Checkpoint.exitAdaptersHash); absent: plain exits. */
    exitAdaptersHash: z.string().min(1).optional(),
    numLayers: LAYER,
    hiddenSize: z.int().min(1),
  }),
  split: LAYER,
  exitLayers: z.array(LAYER).min(1),
  heads: z.array(EXIT_HEAD_CHOICE_SCHEMA),
  /** Policies with the calibrated heads, one per target agreement. */
  policies: z.array(CALIBRATED_POLICY_SCHEMA).min(1),
  /** The same with plain heads (final norm + LM head) and the signals' own metrics, for comparison. */
  plainPolicies: z.array(CALIBRATED_POLICY_SCHEMA),
  /**
   * A confidence model per exit of the calibrated heads, for the `learned` metric (absent
   * in files from before it; their policies use the signals' own metrics).
   */
  confidence: z.array(CONFIDENCE_MODEL_SCHEMA).optional(),
  curve: z.array(CURVE_POINT_SCHEMA),
  text: z.object({
    tokens: z.int().min(0),
    windowTokens: z.int().min(1),
    fitPositions: z.int().min(0),
    tunePositions: z.int().min(0),
    testPositions: z.int().min(0),
  }),
  ridge: z.number().min(0),
  /**
   * MoE: how often the routers chose each expert over the calibration text, indexed
   * layer·numExperts + expert over the whole model (absent for dense models and in files
   * from before it was recorded).
   */
  expertActivations: z.array(z.number().min(0)).optional(),
});

export type ExitHeadChoice = z.output<typeof EXIT_HEAD_CHOICE_SCHEMA>;
export type CalibratedPolicy = z.output<typeof CALIBRATED_POLICY_SCHEMA>;
export type CurvePoint = z.output<typeof CURVE_POINT_SCHEMA>;
export type CalibratedConfidenceModel = z.output<typeof CONFIDENCE_MODEL_SCHEMA>;
export type CalibrationSummary = z.output<typeof CALIBRATION_SUMMARY_SCHEMA>;

export interface Calibration {
  summary: CalibrationSummary;
  linearMaps: Map<number, { weight: Float32Array; bias: Float32Array }>;
}

export async function writeCalibration(path: string, calibration: Calibration): Promise<void> {
  const hidden = calibration.summary.model.hiddenSize;
  const tensors: TensorToWrite[] = [];
  for (const [layer, map] of [...calibration.linearMaps].sort((a, b) => a[0] - b[0])) {
    tensors.push({ name: `exit.${layer}.linear.weight`, shape: [hidden, hidden], data: map.weight });
    tensors.push({ name: `exit.${layer}.linear.bias`, shape: [hidden], data: map.bias });
  }
  await writeSafetensors(path, tensors, "F32", {
    [CALIBRATION_METADATA_KEY]: JSON.stringify(calibration.summary),
  });
}

/**
 * Why a calibration cannot be written to `path`, or undefined when it can: checked before
 * a calibration runs (minutes on a large model), so an output that cannot be written
 * costs nothing.
 */
export async function calibrationOutputProblem(path: string): Promise<string | undefined> {
  const isDirectory = await stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (isDirectory) return `${path} is a directory`;
  const directory = dirname(resolve(path));
  return access(directory, constants.W_OK).then(
    () => undefined,
    (error: Error) => `cannot write to ${directory} (${error.message})`,
  );
}

export async function readCalibration(path: string): Promise<Calibration> {
  const file = await SafetensorsFile.open(path);
  const raw = file.metadata[CALIBRATION_METADATA_KEY];
  if (typeof raw !== "string")
    throw new CheckpointError(
      path,
      `has no "${CALIBRATION_METADATA_KEY}" metadata: not a Tandem calibration file`,
    );
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (error) {
    throw new CheckpointError(path, `calibration metadata is not valid JSON (${(error as Error).message})`, {
      cause: error,
    });
  }
  const version = (json as { version?: unknown } | null)?.version;
  if (version !== CALIBRATION_VERSION)
    throw new CheckpointError(path, `calibration version ${String(version)} is not ${CALIBRATION_VERSION}`);
  let summary: CalibrationSummary;
  try {
    summary = parseOrThrow(CALIBRATION_SUMMARY_SCHEMA, json, "calibration");
  } catch (error) {
    throw new CheckpointError(path, (error as Error).message, { cause: error });
  }
  const { split, exitLayers, model } = summary;
  if (split >= model.numLayers)
    throw new CheckpointError(
      path,
      `calibration.split: ${split} leaves no layer of ${model.numLayers} to the cloud`,
    );
  for (const layer of [...exitLayers, ...summary.heads.map((h) => h.afterLayer)])
    if (layer > split)
      throw new CheckpointError(path, `calibration: exit layer ${layer} is past the split ${split}`);
  checkRulesUseExits(summary, path);
  checkConfidenceModels(summary, path);
  const linearMaps = new Map<number, { weight: Float32Array; bias: Float32Array }>();
  for (const head of summary.heads) {
    if (head.head !== "linear") continue;
    // Shape and finite values, as a checkpoint's weights: a NaN in a map would make every
    // probability at that exit NaN at run time.
    const h = model.hiddenSize;
    linearMaps.set(head.afterLayer, {
      weight: file.readChecked(`exit.${head.afterLayer}.linear.weight`, [h, h]).data,
      bias: file.readChecked(`exit.${head.afterLayer}.linear.bias`, [h]).data,
    });
  }
  return { summary, linearMaps };
}

/**
 * Every layer a policy's thresholds or a curve point name must be one of exitLayers, the
 * exits a segment is built with: a rule for any other layer would never see an exit.
 */
function checkRulesUseExits(summary: CalibrationSummary, path: string): void {
  const { exitLayers } = summary;
  const check = (field: string, layer: number) => {
    if (!exitLayers.includes(layer))
      throw new CheckpointError(
        path,
        `calibration.${field}: ${layer} is not one of the exit layers [${exitLayers.join(", ")}]`,
      );
  };
  for (const list of ["policies", "plainPolicies"] as const)
    summary[list].forEach((policy, p) =>
      policy.thresholds.forEach((rule, t) =>
        check(`${list}[${p}].thresholds[${t}].afterLayer`, rule.afterLayer),
      ),
    );
  summary.curve.forEach((point, c) =>
    point.exits.forEach((layer, e) => check(`curve[${c}].exits[${e}]`, layer)),
  );
}

/**
 * Each confidence model sits at an exit, reads the exit before it (the one the policy will
 * hand it), names the features this runtime computes, in its order, and has a finite
 * weight for each term; every `learned` rule has a model. A model that broke any of these
 * would score its exit's positions by features it was not fitted on, or not at all.
 */
function checkConfidenceModels(summary: CalibrationSummary, path: string): void {
  const models = summary.confidence ?? [];
  const fail = (field: string, why: string) => {
    throw new CheckpointError(path, `calibration.${field}: ${why}`);
  };
  models.forEach((model, i) => {
    const field = `confidence[${i}]`;
    if (!summary.exitLayers.includes(model.afterLayer))
      fail(
        `${field}.afterLayer`,
        `${model.afterLayer} is not one of the exit layers [${summary.exitLayers.join(", ")}]`,
      );
    if (models.findIndex((m) => m.afterLayer === model.afterLayer) !== i)
      fail(`${field}.afterLayer`, `a second model for the exit after ${model.afterLayer}`);
    const previous = previousExitLayer(model.afterLayer, summary.exitLayers);
    if (model.previousLayer !== previous)
      fail(
        `${field}.previousLayer`,
        `must be ${previous ?? "absent"} (the exit before ${model.afterLayer}), got ${model.previousLayer ?? "absent"}`,
      );
    // With an earlier exit, the KL divergence from it is optional (files from before it).
    const allowed =
      previous === undefined
        ? [confidenceFeatureNames(false)]
        : [confidenceFeatureNames(true, true), confidenceFeatureNames(true, false)];
    const expected = allowed.find((names) => names.join(",") === model.features.join(","));
    if (!expected)
      return fail(
        `${field}.features`,
        `must be ${allowed.map((names) => `[${names.join(", ")}]`).join(" or ")}, got [${model.features.join(", ")}]`,
      );
    for (const key of ["mean", "scale"] as const)
      if (model[key].length !== expected.length)
        fail(`${field}.${key}`, `has ${model[key].length} entries for ${expected.length} features`);
    if (!model.scale.every((s) => s > 0)) fail(`${field}.scale`, "must be positive");
    const terms = quadraticTermCount(expected.length);
    if (model.weights.length !== terms)
      fail(
        `${field}.weights`,
        `has ${model.weights.length} entries for ${terms} terms (${expected.length} features and their products)`,
      );
    if (![...model.weights, ...model.mean, ...model.scale, model.bias].every(Number.isFinite))
      fail(field, "holds a number that is not finite");
  });
  summary.policies.forEach((policy, p) =>
    policy.thresholds.forEach((rule, t) => {
      if (rule.metric === "learned" && !models.some((m) => m.afterLayer === rule.afterLayer))
        fail(
          `policies[${p}].thresholds[${t}].metric`,
          `"learned" without a confidence model for the exit after ${rule.afterLayer}`,
        );
    }),
  );
  // The models were fitted on the calibrated heads' signals, not the plain heads'.
  summary.plainPolicies.forEach((policy, p) =>
    policy.thresholds.forEach((rule, t) => {
      if (rule.metric === "learned")
        fail(`plainPolicies[${p}].thresholds[${t}].metric`, `"learned" is for the calibrated heads only`);
    }),
  );
}

/** Checks a calibration against the checkpoint it is used with; throws naming the mismatch. */
export function checkCalibrationMatches(
  calibration: Calibration,
  checkpoint: Checkpoint,
  path: string,
): void {
  const { model } = calibration.summary;
  if (model.weightsHash !== checkpoint.weightsHash) {
    throw new InvalidArgumentError(
      "calibration",
      `${path} was made for weights ${model.weightsHash.slice(0, 12)}…, the checkpoint is ${checkpoint.weightsHash.slice(0, 12)}…`,
    );
  }
  // Thresholds and edge shares hold only for the exits they were measured on.
  if (model.exitAdaptersHash !== checkpoint.exitAdaptersHash) {
    const adapters = (hash: string | undefined) =>
      hash ? `exit adapters ${hash.slice(0, 12)}…` : "plain exits";
    throw new InvalidArgumentError(
      "calibration",
      `${path} was made with ${adapters(model.exitAdaptersHash)}, the checkpoint has ${adapters(checkpoint.exitAdaptersHash)}`,
    );
  }
}

/** The exit heads a segment should build: linear where calibration chose it. */
export function calibratedExitHeads(calibration: Calibration): ExitHeadSpec[] {
  return calibration.summary.exitLayers.map((afterLayer) => ({
    afterLayer,
    linearMap: calibration.linearMaps.get(afterLayer),
  }));
}

/** The agreement target whose thresholds a deployment uses unless told otherwise. */
export const DEFAULT_AGREEMENT_TARGET = 0.99;

/** The exit policy of a calibrated policy: its thresholds, with the calibration's confidence models. */
export function calibratedExitPolicy(
  calibration: Calibration,
  policy: CalibratedPolicy,
): ThresholdExitPolicy {
  const models: ConfidenceModel[] = calibration.summary.confidence ?? [];
  return new ThresholdExitPolicy(policy.thresholds, models);
}

/** The policy for a target agreement: the one with the nearest target at or above it. */
export function policyForTarget(calibration: Calibration, targetAgreement: number): CalibratedPolicy {
  const sorted = [...calibration.summary.policies].sort((a, b) => a.targetAgreement - b.targetAgreement);
  const policy = sorted.find((p) => p.targetAgreement >= targetAgreement - 1e-9) ?? sorted[sorted.length - 1];
  if (!policy) throw new InvalidArgumentError("calibration", "holds no policies");
  return policy;
}
