/**
 * A calibration file is input an edge reads at every start: anything in it that breaks
 * its schema is a CheckpointError naming the file and the field, never a TypeError later.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CheckpointError, InvalidArgumentError, TensorMismatchError } from "@tandem/common";
import type { Checkpoint } from "../checkpoint/model-weights.ts";
import {
  confidenceFeatureNames,
  type ConfidenceModel,
  quadraticTermCount,
  readsKlPrevious,
} from "../exits/confidence-model.ts";
import { writeSafetensors } from "../checkpoint/safetensors.ts";
import {
  CALIBRATION_METADATA_KEY,
  type Calibration,
  calibrationOutputProblem,
  checkCalibrationMatches,
  readCalibration,
  writeCalibration,
} from "./calibration-file.ts";

/** The demo model's split-5 calibration: linear maps on both exits. */
const SHIPPED = join(
  import.meta.dirname,
  "..",
  "..",
  "..",
  "models",
  "tandem-demo",
  "calibration-split5.safetensors",
);
let dir: string;
let shipped: Calibration;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "tandem-calibration-file-"));
  shipped = await readCalibration(SHIPPED);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Writes the shipped calibration with its summary changed by `change`, and reads it back. */
async function readChanged(name: string, change: (summary: Record<string, unknown>) => void) {
  const summary = structuredClone(shipped.summary) as unknown as Record<string, unknown>;
  change(summary);
  const path = join(dir, `${name}.safetensors`);
  await writeCalibration(path, { ...shipped, summary: summary as unknown as Calibration["summary"] });
  return readCalibration(path);
}

describe("reading a calibration file", () => {
  it("round-trips the shipped calibration", async () => {
    const again = await readChanged("same", () => {});
    expect(again.summary).toEqual(shipped.summary);
    expect([...again.linearMaps.keys()]).toEqual([...shipped.linearMaps.keys()]);
  });

  it("names a missing or mistyped field of the summary", async () => {
    await expect(readChanged("no-heads", (s) => delete s.heads)).rejects.toThrow(
      /calibration\.heads: .*required/,
    );
    await expect(
      readChanged("bad-metric", (s) => ((s.policies as { metric: string }[])[0].metric = "loudness")),
    ).rejects.toThrow(/calibration\.policies\[0\]\.metric: must be one of prob, margin, entropy, learned/);
    await expect(readChanged("no-policies", (s) => (s.policies = []))).rejects.toBeInstanceOf(
      CheckpointError,
    );
  });

  it("holds a confidence model per exit, each reading the exit before it, used by its learned thresholds", () => {
    const { confidence, exitLayers, policies } = shipped.summary;
    expect(confidence?.map((m) => [m.afterLayer, m.previousLayer])).toEqual(
      exitLayers.map((layer, i) => [layer, exitLayers[i - 1]]),
    );
    expect(policies.some((p) => p.metric === "learned")).toBe(true);
  });

  it("reads the KL divergence at an exit with an earlier one, and still takes a model from before it", async () => {
    const models = shipped.summary.confidence!;
    expect(models.map((m) => readsKlPrevious(m))).toEqual(models.map((m) => m.previousLayer !== undefined));
    const older = confidenceFeatureNames(true);
    const again = await readChanged("before-kl", (s) => {
      const model = (s.confidence as ConfidenceModel[])[1];
      Object.assign(model, {
        features: older,
        mean: older.map(() => 0),
        scale: older.map(() => 1),
        weights: new Array<number>(quadraticTermCount(older.length)).fill(0),
      });
    });
    expect(readsKlPrevious(again.summary.confidence![1])).toBe(false);
  });

  it("refuses a confidence model that this runtime would score differently, or a learned rule without one", async () => {
    const models = (s: Record<string, unknown>) => s.confidence as ConfidenceModel[];
    const cases: [string, (s: Record<string, unknown>) => void, RegExp][] = [
      [
        "model-off-exit",
        (s) => (models(s)[0].afterLayer = 1),
        /confidence\[0\]\.afterLayer: 1 is not one of the exit layers/,
      ],
      [
        "model-twice",
        (s) => (models(s)[1].afterLayer = models(s)[0].afterLayer),
        /confidence\[1\]\.afterLayer: a second model/,
      ],
      [
        "wrong-previous",
        (s) => delete models(s)[1].previousLayer,
        /confidence\[1\]\.previousLayer: must be 3 .*got absent/,
      ],
      [
        "renamed-feature",
        (s) => (models(s)[0].features[0] = "loudness"),
        /confidence\[0\]\.features: must be \[prob, margin/,
      ],
      [
        "kl-without-previous",
        (s) => models(s)[0].features.push("kl_previous", "log_kl_previous"),
        /confidence\[0\]\.features: must be \[prob, margin, entropy, log_margin, log_one_minus_prob\], got/,
      ],
      [
        "kl-weights-short",
        (s) => models(s)[1].weights.pop(),
        /confidence\[1\]\.weights: has 103 entries for 104 terms \(13 features and their products\)/,
      ],
      [
        "short-weights",
        (s) => models(s)[0].weights.pop(),
        /confidence\[0\]\.weights: has 19 entries for 20 terms \(5 features and their products\)/,
      ],
      ["short-mean", (s) => models(s)[0].mean.pop(), /confidence\[0\]\.mean: has 4 entries for 5 features/],
      ["zero-scale", (s) => (models(s)[0].scale[1] = 0), /confidence\[0\]\.scale: must be positive/],
      [
        "no-models",
        (s) => delete s.confidence,
        /policies\[\d\]\.thresholds\[\d\]\.metric: "learned" without a confidence model/,
      ],
      [
        "learned-plain",
        (s) =>
          ((s.plainPolicies as { thresholds: { metric: string }[] }[])[0].thresholds[0].metric = "learned"),
        /plainPolicies\[0\]\.thresholds\[0\]\.metric: "learned" is for the calibrated heads only/,
      ],
    ];
    for (const [name, change, message] of cases) {
      const reading = readChanged(name, change);
      await expect(reading, name).rejects.toBeInstanceOf(CheckpointError);
      await expect(reading, name).rejects.toThrow(message);
    }
  });

  it("refuses an exit past the split and a split with no layer left to the cloud", async () => {
    await expect(readChanged("exit-past-split", (s) => (s.exitLayers = [2, 6]))).rejects.toThrow(
      /exit layer 6 is past the split 5/,
    );
    await expect(readChanged("split-at-end", (s) => (s.split = 6))).rejects.toThrow(
      /calibration\.split: 6 leaves no layer of 6 to the cloud/,
    );
  });

  it("refuses a linear map of the wrong shape", async () => {
    const hidden = shipped.summary.model.hiddenSize;
    const path = join(dir, "bad-shape.safetensors");
    const layers = [...shipped.linearMaps.keys()];
    await writeSafetensors(
      path,
      layers.flatMap((layer) => [
        {
          name: `exit.${layer}.linear.weight`,
          shape: [hidden, hidden - 1],
          data: new Float32Array(hidden * (hidden - 1)),
        },
        { name: `exit.${layer}.linear.bias`, shape: [hidden], data: new Float32Array(hidden) },
      ]),
      "F32",
      { [CALIBRATION_METADATA_KEY]: JSON.stringify(shipped.summary) },
    );
    const read = readCalibration(path);
    await expect(read).rejects.toBeInstanceOf(TensorMismatchError);
    await expect(read).rejects.toThrow(
      `has shape [${hidden}, ${hidden - 1}], expected [${hidden}, ${hidden}]`,
    );
  });

  it("refuses a linear map holding NaN or an infinity, naming the tensor and where", async () => {
    /** The shipped calibration's file with one value of one of its tensors replaced. */
    const readWithValue = async (name: string, tensor: string, index: number, value: number) => {
      const path = join(dir, `${name}.safetensors`);
      const hidden = shipped.summary.model.hiddenSize;
      await writeSafetensors(
        path,
        [...shipped.linearMaps].flatMap(([layer, map]) => {
          const weight = map.weight.slice();
          const bias = map.bias.slice();
          if (tensor === `exit.${layer}.linear.weight`) weight[index] = value;
          if (tensor === `exit.${layer}.linear.bias`) bias[index] = value;
          return [
            { name: `exit.${layer}.linear.weight`, shape: [hidden, hidden], data: weight },
            { name: `exit.${layer}.linear.bias`, shape: [hidden], data: bias },
          ];
        }),
        "F32",
        { [CALIBRATION_METADATA_KEY]: JSON.stringify(shipped.summary) },
      );
      return readCalibration(path);
    };
    const layer = Math.max(...shipped.linearMaps.keys());
    const nan = readWithValue("nan-weight", `exit.${layer}.linear.weight`, 7, NaN);
    await expect(nan).rejects.toBeInstanceOf(TensorMismatchError);
    await expect(nan).rejects.toThrow(
      `tensor "exit.${layer}.linear.weight" has a non-finite value (NaN) at flat index 7`,
    );
    const infinite = readWithValue("infinite-bias", `exit.${layer}.linear.bias`, 3, -Infinity);
    await expect(infinite).rejects.toBeInstanceOf(TensorMismatchError);
    await expect(infinite).rejects.toThrow(
      `tensor "exit.${layer}.linear.bias" has a non-finite value (-Infinity) at flat index 3`,
    );
  });

  it("refuses a threshold or a curve point at a layer that is not one of its exits, naming the field", async () => {
    const exits = `[${shipped.summary.exitLayers.join(", ")}]`;
    const threshold = readChanged("threshold-not-an-exit", (s) => {
      (s.policies as { thresholds: { afterLayer: number }[] }[])[0].thresholds[0].afterLayer = 2;
    });
    await expect(threshold).rejects.toBeInstanceOf(CheckpointError);
    await expect(threshold).rejects.toThrow(
      `calibration.policies[0].thresholds[0].afterLayer: 2 is not one of the exit layers ${exits}`,
    );
    await expect(
      readChanged("plain-threshold-not-an-exit", (s) => {
        (s.plainPolicies as { thresholds: { afterLayer: number }[] }[])[1].thresholds[0].afterLayer = 1;
      }),
    ).rejects.toThrow(
      `calibration.plainPolicies[1].thresholds[0].afterLayer: 1 is not one of the exit layers ${exits}`,
    );
    const curve = readChanged("curve-not-an-exit", (s) => {
      (s.curve as { exits: number[] }[])[4].exits = [shipped.summary.exitLayers[0], 2];
    });
    await expect(curve).rejects.toBeInstanceOf(CheckpointError);
    await expect(curve).rejects.toThrow(
      `calibration.curve[4].exits[1]: 2 is not one of the exit layers ${exits}`,
    );
  });
});

describe("a calibration belongs to the weights and the exits it was measured on", () => {
  const model = (weightsHash: string, exitAdaptersHash?: string) =>
    ({ weightsHash, exitAdaptersHash }) as unknown as Checkpoint;
  const calibrationFor = (weightsHash: string, exitAdaptersHash?: string): Calibration => ({
    ...shipped,
    summary: { ...shipped.summary, model: { ...shipped.summary.model, weightsHash, exitAdaptersHash } },
  });

  it("matches the same weights with the same exit adapters, or plain exits on both sides", () => {
    expect(() => checkCalibrationMatches(calibrationFor("w1", "a1"), model("w1", "a1"), "c")).not.toThrow();
    expect(() => checkCalibrationMatches(calibrationFor("w1"), model("w1"), "c")).not.toThrow();
  });

  it("refuses other weights, other adapters, adapters where it had none and none where it had them", () => {
    const cases: [Calibration, Checkpoint, RegExp][] = [
      [calibrationFor("w1", "a1"), model("w2", "a1"), /c was made for weights w1…, the checkpoint is w2…/],
      [
        calibrationFor("w1", "a1"),
        model("w1", "a2"),
        /made with exit adapters a1…, the checkpoint has exit adapters a2…/,
      ],
      [
        calibrationFor("w1"),
        model("w1", "a1"),
        /made with plain exits, the checkpoint has exit adapters a1…/,
      ],
      [
        calibrationFor("w1", "a1"),
        model("w1"),
        /made with exit adapters a1…, the checkpoint has plain exits/,
      ],
    ];
    for (const [calibration, checkpoint, message] of cases) {
      expect(() => checkCalibrationMatches(calibration, checkpoint, "c")).toThrow(InvalidArgumentError);
      expect(() => checkCalibrationMatches(calibration, checkpoint, "c")).toThrow(message);
    }
  });
});

describe("where a calibration can be written", () => {
  it("says why before the calibration runs: a missing directory, a directory in the way", async () => {
    expect(await calibrationOutputProblem(join(dir, "out.safetensors"))).toBeUndefined();
    expect(await calibrationOutputProblem(join(dir, "nowhere", "out.safetensors"))).toMatch(
      /^cannot write to .*nowhere \(ENOENT/,
    );
    mkdirSync(join(dir, "a-directory"));
    expect(await calibrationOutputProblem(join(dir, "a-directory"))).toMatch(/a-directory is a directory$/);
  });
});
