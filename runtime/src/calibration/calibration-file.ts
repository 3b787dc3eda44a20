/**
 * The calibration file an edge agent loads: one safetensors file holding the fitted
 * exit maps as tensors (`exit.K.linear.weight` [hidden, hidden], `exit.K.linear.bias`)
 * and everything else — which head each exit uses, the chosen thresholds per target
 * agreement, the whole agreement-vs-edge-share curve — as JSON in the metadata entry
 * `tandem.calibration`.
 */
import { CheckpointError, InvalidArgumentError } from "@tandem/common";
import type { ConfidenceMetric, ExitThreshold } from "../exits/exit-policy.ts";
import type { ExitHeadSpec } from "../graph/segment-spec.ts";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../checkpoint/safetensors.ts";
import type { Checkpoint } from "../checkpoint/model-weights.ts";

export const CALIBRATION_METADATA_KEY = "tandem.calibration";
export const CALIBRATION_VERSION = 1;

export interface ExitHeadChoice {
  afterLayer: number;
  head: "plain" | "linear";
  /** Agreement of each head's top-1 with the full model on held-out text (test split). */
  heldOutAgreement: { plain: number; linear: number };
  /** Share of tokens each head answers alone at the strictest target (tuning split): the choice. */
  tuneEdgeShare: { plain: number; linear: number };
}

export interface CalibratedPolicy {
  targetAgreement: number;
  metric: ConfidenceMetric;
  thresholds: ExitThreshold[];
  /** Measured on the tuning split (where thresholds were chosen) and on the test split. */
  tune: { edgeShare: number; agreement: number };
  test: { edgeShare: number; agreement: number; perExit: Record<number, number> };
}

export interface CurvePoint {
  heads: "plain" | "calibrated";
  /** The exits the policy may answer at. */
  exits: number[];
  metric: ConfidenceMetric;
  targetAgreement: number;
  edgeShare: number;
  agreement: number;
}

export interface CalibrationSummary {
  version: number;
  model: { weightsHash: string; numLayers: number; hiddenSize: number };
  split: number;
  exitLayers: number[];
  heads: ExitHeadChoice[];
  /** Policies with the calibrated heads, one per target agreement. */
  policies: CalibratedPolicy[];
  /** The same with plain heads (final norm + LM head), for comparison. */
  plainPolicies: CalibratedPolicy[];
  curve: CurvePoint[];
  text: {
    tokens: number;
    windowTokens: number;
    fitPositions: number;
    tunePositions: number;
    testPositions: number;
  };
  ridge: number;
}

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

export async function readCalibration(path: string): Promise<Calibration> {
  const file = await SafetensorsFile.open(path);
  const raw = file.metadata[CALIBRATION_METADATA_KEY];
  if (typeof raw !== "string")
    throw new CheckpointError(
      path,
      `has no "${CALIBRATION_METADATA_KEY}" metadata: not a Tandem calibration file`,
    );
  let summary: CalibrationSummary;
  try {
    summary = JSON.parse(raw) as CalibrationSummary;
  } catch (error) {
    throw new CheckpointError(path, `calibration metadata is not valid JSON (${(error as Error).message})`, {
      cause: error,
    });
  }
  if (summary.version !== CALIBRATION_VERSION)
    throw new CheckpointError(path, `calibration version ${summary.version} is not ${CALIBRATION_VERSION}`);
  const linearMaps = new Map<number, { weight: Float32Array; bias: Float32Array }>();
  for (const head of summary.heads) {
    if (head.head !== "linear") continue;
    linearMaps.set(head.afterLayer, {
      weight: file.read(`exit.${head.afterLayer}.linear.weight`).data,
      bias: file.read(`exit.${head.afterLayer}.linear.bias`).data,
    });
  }
  return { summary, linearMaps };
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
}

/** The exit heads a segment should build: linear where calibration chose it. */
export function calibratedExitHeads(calibration: Calibration): ExitHeadSpec[] {
  return calibration.summary.exitLayers.map((afterLayer) => ({
    afterLayer,
    linearMap: calibration.linearMaps.get(afterLayer),
  }));
}

/** The policy for a target agreement: the one with the nearest target at or above it. */
/** The agreement target whose thresholds a deployment uses unless told otherwise. */
export const DEFAULT_AGREEMENT_TARGET = 0.99;

export function policyForTarget(calibration: Calibration, targetAgreement: number): CalibratedPolicy {
  const sorted = [...calibration.summary.policies].sort((a, b) => a.targetAgreement - b.targetAgreement);
  const policy = sorted.find((p) => p.targetAgreement >= targetAgreement - 1e-9) ?? sorted[sorted.length - 1];
  if (!policy) throw new InvalidArgumentError("calibration", "holds no policies");
  return policy;
}
