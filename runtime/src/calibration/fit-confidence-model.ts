/**
 * Fitting an exit's confidence model (exits/confidence-model.ts) on calibration records:
 * its features at every position, standardised over those positions, expanded by their
 * pairwise products, and labelled by whether the exit's token was the full model's.
 */
import {
  confidenceFeatureNames,
  confidenceFeatures,
  quadraticTerms,
  standardized,
} from "../exits/confidence-model.ts";
import type { CalibratedConfidenceModel } from "./calibration-file.ts";
import { columnMoments, fitLogistic } from "./logistic-regression.ts";
import type { PositionRecord } from "./threshold-search.ts";

export interface FittedConfidenceModel {
  model: CalibratedConfidenceModel;
  /** Mean log-loss on the positions it was fitted on, and the Newton steps it took. */
  logLoss: number;
  iterations: number;
}

/**
 * The model of the exit after `afterLayer`, reading the exit after `previousLayer` too when
 * given, and the KL divergence between the two when every record has it.
 */
export function fitConfidenceModel(
  records: PositionRecord[],
  afterLayer: number,
  previousLayer?: number,
): FittedConfidenceModel {
  const exitOf = (r: PositionRecord) => r.exits.find((e) => e.afterLayer === afterLayer)!;
  const withKl = previousLayer !== undefined && records.every((r) => exitOf(r).klPrevious !== undefined);
  const rows = records.map((r) =>
    confidenceFeatures(
      exitOf(r),
      previousLayer === undefined ? undefined : r.exits.find((e) => e.afterLayer === previousLayer),
      withKl,
    ),
  );
  const labels = records.map((r) => exitOf(r).token === r.finalToken);
  const { mean, scale } = columnMoments(rows);
  const fit = fitLogistic(
    rows.map((row) => quadraticTerms(standardized(row, mean, scale))),
    labels,
  );
  const model: CalibratedConfidenceModel = {
    afterLayer,
    ...(previousLayer !== undefined && { previousLayer }),
    features: confidenceFeatureNames(previousLayer !== undefined, withKl),
    mean,
    scale,
    weights: fit.weights,
    bias: fit.bias,
    fitPositions: rows.length,
    fitAgreement: labels.filter(Boolean).length / Math.max(1, labels.length),
  };
  return { model, logLoss: fit.logLoss, iterations: fit.iterations };
}
