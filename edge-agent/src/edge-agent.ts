/**
 * The edge agent: the device's segment [0, split) with its exits, the exit policy from
 * calibration, a link to a cloud worker, and the public Inference API.
 */
import { existsSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { loadTandemProtos } from "@tandem/proto";
import {
  calibratedExitHeads,
  checkCalibrationMatches,
  policyForTarget,
  readCalibration,
} from "@tandem/runtime";
import { loadCheckpoint } from "@tandem/runtime";
import type { CodecName } from "@tandem/runtime";
import { SegmentModel } from "@tandem/runtime";
import { SegmentSessions } from "@tandem/runtime";
import { InvalidArgumentError } from "@tandem/common";
import {
  BudgetExitPolicy,
  RollingEntropyPolicy,
  ThresholdExitPolicy,
  type ConfidenceMetric,
  type ExitPolicy,
} from "@tandem/runtime";
import { edgeSegmentSpec } from "@tandem/runtime";
import type { ExitHeadSpec, WeightFormat } from "@tandem/runtime";
import { Tokenizer } from "@tandem/runtime";
import { startGrpcServer, type RunningServer } from "@tandem/proto";
import type { Logger } from "@tandem/common";
import { CloudLinks } from "./cloud-link.ts";
import { PlacementCloudRoute, StaticCloudRoute } from "./cloud-route.ts";
import type { EdgeConfig } from "./edge-config.ts";
import { inferenceHandlers } from "./inference-service.ts";

export interface EdgeAgent {
  server: RunningServer;
  split: number;
  exitLayers: number[];
  close(graceMs?: number): Promise<void>;
}

export async function startEdgeAgent(
  config: EdgeConfig,
  log: Logger,
  options: { cacheDir?: string } = {},
): Promise<EdgeAgent> {
  const checkpoint = await loadCheckpoint(config.model);
  if (!checkpoint.tokenizerPath)
    throw new InvalidArgumentError("model", `${config.model} has no tokenizer.json`);
  const tokenizer = await Tokenizer.fromFile(checkpoint.tokenizerPath);
  const calibration = config.calibration ? await readCalibration(config.calibration) : undefined;
  if (calibration && config.calibration) checkCalibrationMatches(calibration, checkpoint, config.calibration);

  const deploymentPath = join(config.model, "tandem.json");
  const deployment = existsSync(deploymentPath)
    ? (JSON.parse(readFileSync(deploymentPath, "utf8")) as {
        exit_layers: number[];
        recommended_split: number;
      })
    : undefined;
  const split = config.split ?? calibration?.summary.split ?? deployment?.recommended_split;
  if (split === undefined)
    throw new InvalidArgumentError(
      "split",
      "set split (no calibration file and no tandem.json to take it from)",
    );
  if (calibration && calibration.summary.split !== split)
    throw new InvalidArgumentError(
      "split",
      `calibration was made for split ${calibration.summary.split}, config says ${split}`,
    );
  const layers = checkpoint.config.numLayers;
  if (split < 1 || split >= layers)
    throw new InvalidArgumentError("split", `must be in [1, ${layers - 1}], got ${split}`);

  let exits: ExitHeadSpec[];
  let thresholdPolicy: () => ExitPolicy;
  if (calibration) {
    exits = calibratedExitHeads(calibration);
    const thresholds = policyForTarget(calibration, config.target).thresholds;
    thresholdPolicy = () => new ThresholdExitPolicy(thresholds);
  } else {
    const layersList = config.exitLayers
      ? config.exitLayers.split(",").map(Number)
      : (deployment?.exit_layers ?? [split]);
    for (const l of layersList)
      if (!Number.isInteger(l) || l < 1 || l > split)
        throw new InvalidArgumentError("exitLayers", `${l} is outside [1, ${split}]`);
    exits = layersList.map((afterLayer) => ({ afterLayer }));
    thresholdPolicy = () =>
      ThresholdExitPolicy.uniform(layersList, config.metric as ConfidenceMetric, config.threshold);
  }
  // The policy of AUTO mode: thresholds (calibrated or configured), Entropy Adaptive
  // Decoding's rolling entropy, or a budget of escalations. One instance per session.
  const autoPolicy: () => ExitPolicy =
    config.policy === "rolling-entropy"
      ? () => new RollingEntropyPolicy(config.threshold, config.rollingWindow)
      : config.policy === "budget"
        ? () => new BudgetExitPolicy(config.escalationRate, config.metric as ConfidenceMetric)
        : thresholdPolicy;
  const lowerModel = await SegmentModel.load(
    checkpoint,
    edgeSegmentSpec(split, exits, config.weights as WeightFormat),
    { threads: config.threads, cacheDir: options.cacheDir },
  );
  const lower = new SegmentSessions(lowerModel);
  // The cloud: a fixed worker, or the owner of each session's shard in the placement map.
  const route = config.natsUrl
    ? await PlacementCloudRoute.start(config.natsUrl, config.cluster)
    : config.cloudAddress
      ? new StaticCloudRoute(config.cloudAddress)
      : undefined;
  const cloud =
    route &&
    new CloudLinks(
      {
        codec: config.codec as CodecName,
        deadlineMs: config.cloudDeadlineMs,
        keepaliveMs: config.keepaliveMs,
      },
      {
        modelId: basename(config.model),
        weightsHash: checkpoint.weightsHash,
        splitLayer: split,
        hiddenSize: checkpoint.config.hiddenSize,
      },
      route,
    );

  const protos = loadTandemProtos();
  const handlers = inferenceHandlers({
    config: checkpoint.config,
    lower,
    tokenizer,
    cloud,
    autoPolicy,
    exitLayers: exits.map((e) => e.afterLayer),
    limits: {
      maxTokensLimit: config.maxTokensLimit,
      defaultMaxTokens: config.defaultMaxTokens,
      maxPromptTokens: config.maxPromptTokens,
      maxStops: 8,
      maxStopLength: 64,
      maxPromptChars: 64 * 1024,
    },
    log,
  });
  const server = await startGrpcServer(
    protos.definition,
    [
      {
        name: "tandem.v1.Inference",
        definition: protos.tandem.v1.Inference.service,
        handlers: handlers as never,
      },
    ],
    {
      host: config.host,
      port: config.port,
    },
  );
  log.info(
    {
      address: server.address,
      split,
      exits: exits.map((e) => e.afterLayer),
      cloud: config.natsUrl ? `placement map of cluster ${config.cluster}` : (config.cloudAddress ?? null),
      calibrated: Boolean(calibration),
    },
    "edge agent serving",
  );
  return {
    server,
    split,
    exitLayers: exits.map((e) => e.afterLayer),
    async close(graceMs) {
      await server.shutdown(graceMs);
      await cloud?.close();
      await lowerModel.release();
    },
  };
}
