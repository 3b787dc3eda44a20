/**
 * Benchmark `exits`: on the demo model and its shipped held-out text, how many tokens
 * the early exits can answer at a given agreement with the full model — before
 * calibration (plain final-norm + LM-head exits) and after (fitted linear exit maps),
 * per exit and with both exits, for each confidence metric. Thresholds are chosen on one
 * part of the text and measured on another. The recommended split in full; every other
 * split the model ships a calibration for (its exit layers) for the edge share at 99%
 * agreement by split. Writes bench/results/exits.png. "Plain" exits are the model's own:
 * its exit adapters where it has them (checkpoint/exit-adapters.ts); the recommended split
 * is calibrated once more without them, on the same weights, for the adapters' A/B. The
 * calibrated policy picks its metric; `by_metric` gives each metric's share on the same
 * heads and test split, for the learned confidence's A/B against the signals' own.
 * Usage: tandem bench exits [--smoke]
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { formatProgress } from "@tandem/common";
import {
  calibrate,
  CONFIDENCE_METRICS,
  EXIT_METRICS,
  type Calibration,
  type CalibratedPolicy,
  type CurvePoint,
  loadCheckpoint,
  readCalibration,
  readDeployment,
  Tokenizer,
} from "@tandem/runtime";
import { DEMO_HELDOUT_TEXT, DEMO_MODEL, RESULTS_DIR } from "./bench-paths.ts";
import type { BenchOptions, BenchResult } from "./bench-types.ts";
import { createPlotCanvas, writePng } from "./plot-canvas.ts";

const PLOT = join(RESULTS_DIR, "exits.png");

export default async function exitsBenchmark(options: BenchOptions<"exits">): Promise<BenchResult> {
  const checkpoint = await loadCheckpoint(DEMO_MODEL);
  const tokenizer = await Tokenizer.forCheckpoint(checkpoint);
  const deployment = readDeployment(DEMO_MODEL)!;
  const start = performance.now();
  const at = (policies: CalibratedPolicy[], target: number) =>
    policies.find((p) => p.targetAgreement === target)!;
  const text = readFileSync(DEMO_HELDOUT_TEXT, "utf8");
  const calibrateSplit = (
    split: number,
    exitLayers: number[],
    targets: number[],
    label: string,
    model = checkpoint,
  ) =>
    calibrate(model, tokenizer, {
      split,
      exitLayers,
      text,
      targets,
      maxTokens: options.smoke ? 4096 : 65536,
      onProgress: (progress) => process.stderr.write(`${formatProgress(label, progress)}\n`),
    });
  const shareAt99 = (s: Calibration["summary"]) => ({
    before: at(s.plainPolicies, 0.99).test.edgeShare,
    after: at(s.policies, 0.99).test.edgeShare,
  });
  const calibration = await calibrateSplit(
    deployment.recommendedSplit,
    deployment.exitLayers,
    [0.99, 0.95],
    "exits",
  );
  const { summary } = calibration;
  // The other shipped splits, each with the exits of its own calibration (not in smoke runs).
  const bySplit: Record<string, { before: number; after: number }> = { [summary.split]: shareAt99(summary) };
  const others = options.smoke
    ? []
    : [...deployment.calibrations.keys()].filter((split) => split !== summary.split).sort((a, b) => a - b);
  for (const split of others) {
    const shipped = await readCalibration(deployment.calibrations.get(split)!);
    const other = await calibrateSplit(split, shipped.summary.exitLayers, [0.99], `exits split ${split}`);
    bySplit[split] = shareAt99(other.summary);
  }
  const withoutAdapters = checkpoint.exitAdaptersHash
    ? (
        await calibrateSplit(
          summary.split,
          summary.exitLayers,
          [0.99],
          "exits without adapters",
          await loadCheckpoint(DEMO_MODEL, { exitAdapters: false }),
        )
      ).summary
    : undefined;
  // Each metric on the calibrated heads and all exits, thresholds from the tuning split.
  const byMetric = (target: number) =>
    Object.fromEntries(
      summary.curve
        .filter(
          (p) =>
            p.heads === "calibrated" &&
            p.exits.length === summary.exitLayers.length &&
            p.targetAgreement === target,
        )
        .map((p) => [p.metric, { edge_share: p.edgeShare, agreement: p.agreement }]),
    );
  const describe = (p: CalibratedPolicy) => ({
    edge_share: p.test.edgeShare,
    agreement: p.test.agreement,
    metric: p.metric,
    per_exit: p.test.perExit,
  });
  const plotted = !options.smoke && (await plotCurves(summary.curve, summary.exitLayers, PLOT));
  return {
    name: "exits",
    model: "models/tandem-demo",
    split: summary.split,
    exit_layers: summary.exitLayers,
    test_positions: summary.text.testPositions,
    edge_share_at_99pct_agreement: {
      before: at(summary.plainPolicies, 0.99).test.edgeShare,
      after: at(summary.policies, 0.99).test.edgeShare,
      by_metric: byMetric(0.99),
    },
    // Per shipped split: the calibrated policies (`after`) and the plain heads' (`before`).
    edge_share_at_99pct_agreement_by_split: bySplit,
    // The same split and exits with the model's exit adapters left out (absent: it has none).
    exit_adapters: withoutAdapters && {
      with: shareAt99(summary),
      without: shareAt99(withoutAdapters),
      exit_top1_agreement_without: withoutAdapters.heads,
    },
    edge_share_at_95pct_agreement: {
      before: at(summary.plainPolicies, 0.95).test.edgeShare,
      after: at(summary.policies, 0.95).test.edgeShare,
      by_metric: byMetric(0.95),
    },
    policy_99: {
      before: describe(at(summary.plainPolicies, 0.99)),
      after: describe(at(summary.policies, 0.99)),
    },
    policy_95: {
      before: describe(at(summary.plainPolicies, 0.95)),
      after: describe(at(summary.policies, 0.95)),
    },
    exit_top1_agreement: summary.heads,
    curve: summary.curve,
    plot: plotted ? "bench/results/exits.png" : undefined,
    seconds: (performance.now() - start) / 1000,
  };
}

const COLORS: Record<string, string> = {
  prob: "#1f77b4",
  margin: "#2ca02c",
  entropy: "#d62728",
  learned: "#ff7f0e",
};

/** Two panels: all exits together, and each exit alone (max-probability metric). */
async function plotCurves(curve: CurvePoint[], exitLayers: number[], path: string): Promise<boolean> {
  const width = 1200;
  const height = 520;
  const canvas = await createPlotCanvas(width, height);
  if (!canvas) return false;
  const g = canvas.getContext("2d");
  const panels: {
    title: string;
    series: { label: string; color: string; dashed: boolean; points: CurvePoint[] }[];
  }[] = [
    {
      title: `exits after ${exitLayers.join(" and ")} layers together`,
      series: (["plain", "calibrated"] as const).flatMap((heads) =>
        (heads === "plain" ? CONFIDENCE_METRICS : EXIT_METRICS).map((metric) => ({
          label: `${metric}, ${heads === "plain" ? "plain heads" : "calibrated"}`,
          color: COLORS[metric],
          dashed: heads === "plain",
          points: curve.filter(
            (p) => p.heads === heads && p.metric === metric && p.exits.length === exitLayers.length,
          ),
        })),
      ),
    },
    {
      title: "each exit alone (max probability)",
      series: exitLayers.flatMap((layer, i) =>
        (["plain", "calibrated"] as const).map((heads) => ({
          label: `after ${layer} layers, ${heads === "plain" ? "plain head" : "calibrated"}`,
          color: ["#9467bd", "#ff7f0e", "#17becf"][i % 3],
          dashed: heads === "plain",
          points: curve.filter(
            (p) => p.heads === heads && p.metric === "prob" && p.exits.length === 1 && p.exits[0] === layer,
          ),
        })),
      ),
    },
  ];
  panels.forEach((panel, index) => {
    const left = 70 + index * (width / 2);
    const top = 50;
    const plotWidth = width / 2 - 110;
    const plotHeight = height - 120;
    const x = (share: number) => left + share * plotWidth;
    const yMin = 0.9;
    const y = (agreement: number) => top + (1 - (Math.max(agreement, yMin) - yMin) / (1 - yMin)) * plotHeight;
    g.strokeStyle = "#888";
    g.lineWidth = 1;
    g.setLineDash([]);
    g.strokeRect(left, top, plotWidth, plotHeight);
    g.fillStyle = "#222";
    g.font = "15px sans-serif";
    g.fillText(panel.title, left, top - 15);
    g.font = "12px sans-serif";
    for (let t = 0; t <= 5; t++) {
      g.fillText((t / 5).toFixed(1), x(t / 5) - 8, top + plotHeight + 16);
      const a = yMin + (t / 5) * (1 - yMin);
      g.fillText(a.toFixed(2), left - 40, y(a) + 4);
    }
    g.fillText(
      "share of tokens answered at the edge (test split)",
      left + plotWidth / 2 - 140,
      top + plotHeight + 36,
    );
    g.save();
    g.translate(left - 50, top + plotHeight / 2 + 100);
    g.rotate(-Math.PI / 2);
    g.fillText("agreement with the full model", 0, 0);
    g.restore();
    panel.series.forEach((series, s) => {
      const points = [...series.points].sort((a, b) => a.edgeShare - b.edgeShare);
      g.strokeStyle = series.color;
      g.lineWidth = 2;
      g.setLineDash(series.dashed ? [6, 4] : []);
      g.beginPath();
      points.forEach((p, i) =>
        i === 0 ? g.moveTo(x(p.edgeShare), y(p.agreement)) : g.lineTo(x(p.edgeShare), y(p.agreement)),
      );
      g.stroke();
      g.fillStyle = series.color;
      g.fillText(series.label, left + plotWidth - 200, top + plotHeight - 100 + s * 15);
    });
  });
  writePng(canvas, path);
  return true;
}
