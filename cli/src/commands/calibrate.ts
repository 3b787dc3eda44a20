/** `tandem calibrate`: fits exit heads and thresholds on calibration text, writes the file the edge agent loads. */
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { UsageError, formatProgress } from "@tandem/common";
import {
  calibrate,
  calibrationOutputProblem,
  loadCheckpoint,
  RUNTIME_SETTINGS,
  Tokenizer,
  writeCalibration,
} from "@tandem/runtime";
import type { CommandDefinition } from "../command.ts";

const CALIBRATE_OPTIONS = z
  .object({
    model: z.string().min(1).meta({ description: "checkpoint directory" }),
    split: z.int().min(1).meta({ description: "layers the edge runs" }),
    exitLayers: z
      .array(z.int().min(1))
      .min(1)
      .meta({ description: "exits to calibrate, after these many layers" }),
    text: z.string().min(1).meta({ description: "text file to calibrate on" }),
    out: z.string().min(1).meta({ description: "calibration file to write" }),
    targets: z
      .array(z.number().gt(0).lt(1))
      .min(1)
      .optional()
      .meta({ description: "agreement targets to choose thresholds for (default 0.99,0.97,0.95)" }),
    window: z.int().min(8).default(128).meta({ description: "tokens per forward window" }),
    maxTokens: z
      .int()
      .min(1)
      .default(32768)
      .meta({ description: "use at most this many tokens of the text" }),
    ridge: z.number().gt(0).default(1e-3).meta({ description: "relative ridge strength of the exit maps" }),
    threads: RUNTIME_SETTINGS.threads,
  })
  .strict();

export const calibrateCommand: CommandDefinition<typeof CALIBRATE_OPTIONS> = {
  name: "calibrate",
  summary: "fit exit heads and thresholds on text; write the calibration file",
  options: CALIBRATE_OPTIONS,
  async run(options) {
    const outputProblem = await calibrationOutputProblem(options.out);
    if (outputProblem) throw new UsageError("--out", outputProblem);
    const text = await readFile(options.text, "utf8").catch((error: Error) => {
      throw new UsageError("--text", `cannot read ${options.text} (${error.message})`);
    });
    const checkpoint = await loadCheckpoint(options.model);
    const tokenizer = await Tokenizer.forCheckpoint(checkpoint);
    const calibration = await calibrate(checkpoint, tokenizer, {
      split: options.split,
      exitLayers: options.exitLayers,
      text,
      targets: options.targets,
      windowTokens: options.window,
      maxTokens: options.maxTokens,
      ridge: options.ridge,
      threads: options.threads,
      onProgress: (progress) => console.error(formatProgress("calibrate", progress)),
    });
    await writeCalibration(options.out, calibration).catch((error: Error) => {
      throw new UsageError("--out", `cannot write ${options.out} (${error.message})`);
    });
    const { policies, plainPolicies } = calibration.summary;
    console.log(
      JSON.stringify({
        out: options.out,
        heads: calibration.summary.heads,
        policies: policies.map((p, i) => ({
          target: p.targetAgreement,
          metric: p.metric,
          edge_share: p.test.edgeShare,
          agreement: p.test.agreement,
          edge_share_plain_heads: plainPolicies[i].test.edgeShare,
        })),
      }),
    );
    return 0;
  },
};
