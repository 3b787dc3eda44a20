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
  type ConfidenceModel,
} from "../exits/confidence-model.ts";
import { fitLogistic } from "./logistic-regression.ts";
import type { PositionRecord } from "./threshold-search.ts";

export interface FittedConfidenceModel extends ConfidenceModel {
  /** Positions it was fitted on and the share of them where the exit agreed. */
  fitPositions: number;
  fitAgreement: number;
  /** Mean log-loss on those positions. */
  logLoss: number;
  iterations: number;
}

/** The model of the exit after `afterLayer`, reading the exit after `previousLayer` too when given. */
export function fitConfidenceModel(
  records: PositionRecord[],
  afterLayer: number,
  previousLayer?: number,
): FittedConfidenceModel {
  const rows = records.map((r) =>
    confidenceFeatures(
      r.exits.find((e) => e.afterLayer === afterLayer)!,
      previousLayer === undefined ? undefined : r.exits.find((e) => e.afterLayer === previousLayer),
    ),
  );
  const labels = records.map((r) => r.exits.find((e) => e.afterLayer === afterLayer)!.token === r.finalToken);
  const { mean, scale } = columnMoments(rows);
  const fit = fitLogistic(
    rows.map((row) => quadraticTerms(standardized(row, mean, scale))),
    labels,
  );
  return {
    afterLayer,
    ...(previousLayer !== undefined && { previousLayer }),
    features: confidenceFeatureNames(previousLayer !== undefined),
    mean,
    scale,
    weights: fit.weights,
    bias: fit.bias,
    fitPositions: rows.length,
    fitAgreement: labels.filter(Boolean).length / Math.max(1, labels.length),
    logLoss: fit.logLoss,
    iterations: fit.iterations,
  };
}

/** Each column's mean and standard deviation (1 where the column is constant). */
function columnMoments(rows: number[][]): { mean: number[]; scale: number[] } {
  const width = rows[0]?.length ?? 0;
  const n = Math.max(1, rows.length);
  const mean = Array.from({ length: width }, (_, j) => rows.reduce((sum, row) => sum + row[j], 0) / n);
  const scale = mean.map((m, j) => {
    const deviation = Math.sqrt(rows.reduce((sum, row) => sum + (row[j] - m) ** 2, 0) / n);
    return deviation > 1e-12 ? deviation : 1;
  });
  return { mean, scale };
}
