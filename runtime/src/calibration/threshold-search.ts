/**
 * Choosing exit thresholds for a target agreement with the full model. A policy answers
 * at the earliest confident exit and defers the rest (deferred tokens always agree). For
 * a target agreement A over N tokens, the exits may get at most (1 − A)·N tokens wrong;
 * the search picks thresholds that answer the most tokens at the exits within that
 * budget. Pure functions over recorded exit signals, no model in sight.
 */
import { isConfident, type ExitMetric, type ExitSignal, type ExitThreshold } from "../exits/exit-policy.ts";

/** One position of calibration text: what every exit said, and the full model's token. */
export interface PositionRecord {
  exits: ExitSignal[];
  finalToken: number;
}

export interface PolicyOutcome {
  /** Share of tokens answered at an exit (never needing the upper layers). */
  edgeShare: number;
  /** Share of tokens equal to the full model's greedy token. */
  agreement: number;
  /** Share answered at each exit, by afterLayer. */
  perExit: Record<number, number>;
}

/** Applies thresholds (earliest confident exit answers) to recorded positions. */
export function evaluatePolicy(records: PositionRecord[], rules: ExitThreshold[]): PolicyOutcome {
  let answered = 0;
  let agreeing = 0;
  const perExit: Record<number, number> = {};
  for (const rule of rules) perExit[rule.afterLayer] = 0;
  for (const record of records) {
    const ordered = [...record.exits].sort((a, b) => a.afterLayer - b.afterLayer);
    let token = record.finalToken;
    for (const signal of ordered) {
      const rule = rules.find((r) => r.afterLayer === signal.afterLayer);
      if (rule && isConfident(signal, rule)) {
        token = signal.token;
        answered++;
        perExit[signal.afterLayer]++;
        break;
      }
    }
    if (token === record.finalToken) agreeing++;
  }
  const n = Math.max(1, records.length);
  for (const key of Object.keys(perExit)) perExit[Number(key)] /= n;
  return { edgeShare: answered / n, agreement: agreeing / n, perExit };
}

/** Confidence oriented so that larger always means surer. */
function score(signal: ExitSignal, metric: ExitMetric): number {
  switch (metric) {
    case "entropy":
      return -signal.entropy;
    case "prob":
      return signal.prob;
    case "margin":
      return signal.margin;
    case "learned":
      return signal.learned ?? -Infinity;
  }
}

function toThreshold(value: number, metric: ExitMetric): number {
  return metric === "entropy" ? -value : value;
}

/**
 * Thresholds for `exitLayers` with one metric that maximise the edge share on `records`
 * while keeping agreement ≥ target. Exits are considered earliest first; for each
 * candidate threshold of an exit (a quantile of its scores), the later exits get the
 * remaining error budget greedily.
 */
export function searchThresholds(
  records: PositionRecord[],
  exitLayers: number[],
  metric: ExitMetric,
  targetAgreement: number,
  candidates = 64,
): { rules: ExitThreshold[]; outcome: PolicyOutcome } {
  const layers = [...exitLayers].sort((a, b) => a - b);
  const budget = Math.floor((1 - targetAgreement) * records.length + 1e-9);
  const never = (afterLayer: number): ExitThreshold => ({
    afterLayer,
    metric,
    threshold: toThreshold(Infinity, metric),
  });

  // Each exit's scores, and the positions in descending order of them, once: the search
  // below only ever walks that order, skipping positions an earlier exit already took.
  const value = layers.map((layer) =>
    Float64Array.from(records, (r) =>
      score(
        r.exits.find((e) => e.afterLayer === layer)!,
        metric,
      ),
    ),
  );
  const correct = layers.map((layer) =>
    Uint8Array.from(records, (r) =>
      r.exits.find((e) => e.afterLayer === layer)!.token === r.finalToken ? 1 : 0,
    ),
  );
  const order = value.map((v) => Array.from(v.keys()).sort((a, b) => v[b] - v[a]));

  /** Best rules for exits layers[i..] over the positions `remaining` marks, with `errorsLeft` mistakes allowed. */
  const solve = (
    i: number,
    remaining: Uint8Array,
    errorsLeft: number,
  ): { rules: ExitThreshold[]; answered: number } => {
    if (i >= layers.length) return { rules: [], answered: 0 };
    const layer = layers[i];
    const v = value[i];
    const scored = order[i].filter((r) => remaining[r] === 1);
    if (scored.length === 0) return { rules: layers.slice(i).map(never), answered: 0 };
    const skip = solve(i + 1, remaining, errorsLeft);
    let best = { rules: [never(layer), ...skip.rules], answered: skip.answered };
    const isLast = i === layers.length - 1;
    const cuts = isLast ? scored.map((_, k) => k + 1) : quantileCuts(scored.length, candidates);
    // What the later exits see: the remaining positions less those this exit answers (the
    // last exit has none after it, and must leave `remaining`, its caller's, as it is).
    const rest = isLast ? undefined : remaining.slice();
    let errors = 0;
    let taken = 0;
    for (const cut of cuts) {
      while (taken < cut) {
        const r = scored[taken++];
        errors += 1 - correct[i][r];
        if (rest) rest[r] = 0;
      }
      if (errors > errorsLeft) break;
      // A threshold must separate: skip cuts inside a run of equal scores.
      if (cut < scored.length && v[scored[cut]] === v[scored[cut - 1]]) continue;
      const threshold = toThreshold(v[scored[cut - 1]], metric);
      const later = rest ? solve(i + 1, rest, errorsLeft - errors) : { rules: [], answered: 0 };
      if (cut + later.answered > best.answered)
        best = {
          rules: [{ afterLayer: layer, metric, threshold }, ...later.rules],
          answered: cut + later.answered,
        };
    }
    return best;
  };

  // An exit that should never answer gets no rule (an infinite threshold would not survive JSON).
  const all = new Uint8Array(records.length).fill(1);
  const rules = solve(0, all, budget).rules.filter((r) => Number.isFinite(r.threshold));
  return { rules, outcome: evaluatePolicy(records, rules) };
}

function quantileCuts(length: number, candidates: number): number[] {
  const cuts = new Set<number>();
  for (let q = 1; q <= candidates; q++) cuts.add(Math.max(1, Math.round((q / candidates) * length)));
  return [...cuts].sort((a, b) => a - b);
}
