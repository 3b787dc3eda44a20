/**
 * The edge agent: the device's segment [0, split) with its exits, the exit policy from
 * calibration, a link to a cloud worker, and the public Inference API.
 */
import { basename } from "node:path";
import {
  checkPlaintextListen,
  loadTandemProtos,
  type RunningServer,
  startGrpcServer,
  withUndecodedRequests,
} from "@tandem/proto";
import {
  BudgetExitPolicy,
  calibratedExitHeads,
  ChatTemplate,
  checkCalibrationMatches,
  edgeSegmentSpec,
  type ExitHeadSpec,
  type ExitPolicy,
  type Calibration,
  type ExpertCacheStats,
  expertFormatsByActivation,
  type WeightFormat,
  warnUnlessFreedMemoryReturned,
  HostRoutedMoeModel,
  loadCheckpoint,
  calibratedExitPolicy,
  policyForTarget,
  readCalibration,
  readDeployment,
  RollingEntropyPolicy,
  SegmentModel,
  type SegmentRunner,
  SegmentSessions,
  ThresholdExitPolicy,
  Tokenizer,
  splitIdentityOf,
} from "@tandem/runtime";
import {
  InvalidArgumentError,
  listenAddressParts,
  natsCredentialsOf,
  type Logger,
  type Progress,
} from "@tandem/common";
import type { Registry } from "@tandem/common/metrics";
import { ApiKeys } from "@tandem/proto";
import { CloudLinks, DEFAULT_CLOUD_LINK_OPTIONS, loadCircuitBreakers } from "./cloud-link.ts";
import { StaticCloudRoute } from "./cloud-route.ts";
import type { EdgeConfig } from "./edge-config.ts";
import { DEFAULT_REQUEST_LIMITS, inferenceHandlers, maxRequestBytes } from "./inference-service.ts";
import { GenerationAdmission } from "./generation.ts";
import type { RunningHttpApi } from "./openai-api.ts";

export interface EdgeAgent {
  server: RunningServer;
  /** The OpenAI-compatible HTTP API; undefined when httpAddress is empty. */
  http?: RunningHttpApi;
  split: number;
  exitLayers: number[];
  /** Device-segment sessions open now (each generation releases its own when it ends). */
  openSessions(): number;
  close(graceMs?: number): Promise<void>;
}

export async function startEdgeAgent(
  config: EdgeConfig,
  log: Logger,
  options: { cacheDir?: string; metrics?: Registry } = {},
): Promise<EdgeAgent> {
  // Beyond loopback the public API takes TLS and API keys, unless the operator opts out.
  const secured = Boolean(config.tlsCert && config.apiKeys?.length);
  checkPlaintextListen(config.host, secured, config.insecure, "tlsCert, tlsKey and apiKeys");
  const httpListen = config.httpAddress ? listenAddressParts(config.httpAddress) : undefined;
  if (httpListen)
    checkPlaintextListen(
      httpListen.host,
      secured,
      config.insecure,
      "tlsCert, tlsKey and apiKeys",
      "httpAddress",
    );
  if (config.insecure && !secured)
    log.warn({ host: config.host }, "public API without TLS and API keys: anyone who reaches it may use it");
  // The HTTP API's framework loads while the model does (module loading is this thread's
  // work; the graph's session is built on ONNX Runtime's).
  const httpApi = httpListen ? import("./openai-api.ts") : undefined;
  // A failure surfaces where it is awaited; a start that fails before then leaves it unread.
  httpApi?.catch(() => {});
  const checkpoint = await loadCheckpoint(config.model);
  const modelId = basename(config.model);
  const tokenizer = await Tokenizer.forCheckpoint(checkpoint);
  const chatTemplate = await ChatTemplate.find(checkpoint.dir);
  const calibration = config.calibration ? await readCalibration(config.calibration) : undefined;
  if (calibration && config.calibration) checkCalibrationMatches(calibration, checkpoint, config.calibration);

  const deployment = readDeployment(config.model);
  const split = config.split ?? calibration?.summary.split ?? deployment?.recommendedSplit;
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
  // Verified requests: the cloud checks what the edge answers, so it may answer more.
  let draftPolicy: (() => ExitPolicy) | undefined;
  // The calibrated targets whose thresholds are used: the nearest at or above the configured ones.
  let calibratedTargets: { target: number; draftTarget: number } | undefined;
  if (calibration) {
    exits = calibratedExitHeads(calibration);
    const calibrated = policyForTarget(calibration, config.target);
    thresholdPolicy = () => calibratedExitPolicy(calibration, calibrated);
    const draft = policyForTarget(calibration, config.draftTarget);
    draftPolicy = () => calibratedExitPolicy(calibration, draft);
    calibratedTargets = { target: calibrated.targetAgreement, draftTarget: draft.targetAgreement };
  } else {
    const layersList = config.exitLayers ?? deployment?.exitLayers ?? [split];
    for (const l of layersList)
      if (l > split) throw new InvalidArgumentError("exitLayers", `${l} is outside [1, ${split}]`);
    exits = layersList.map((afterLayer) => ({ afterLayer }));
    thresholdPolicy = () => ThresholdExitPolicy.uniform(layersList, config.metric, config.threshold);
  }
  // The policy of AUTO mode: thresholds (calibrated or configured), Entropy Adaptive
  // Decoding's rolling entropy, or a budget of escalations. One instance per session.
  const autoPolicy: () => ExitPolicy =
    config.policy === "rolling-entropy"
      ? () => new RollingEntropyPolicy(config.threshold, config.rollingWindow)
      : config.policy === "budget"
        ? () => new BudgetExitPolicy(config.escalationRate, config.metric)
        : thresholdPolicy;
  const modelOptions = {
    threads: config.threads,
    cacheDir: options.cacheDir,
    onProgress: (progress: Progress) => log.info(progress, "building the segment graph"),
  };
  const lowerSpec = edgeSegmentSpec(split, exits, config.weights, config);
  let lowerModel: SegmentRunner;
  /** With expertBudgetMb: the expert cache's counters, for the metrics. */
  let expertCacheStats: (() => ExpertCacheStats) | undefined;
  if (config.expertColdWeights !== undefined && config.expertBudgetMb === undefined)
    throw new InvalidArgumentError(
      "expertColdWeights",
      "applies with expertBudgetMb (experts run outside the graph)",
    );
  if (config.expertBudgetMb !== undefined) {
    if (!checkpoint.config.numExperts)
      throw new InvalidArgumentError("expertBudgetMb", "applies to MoE models; this one is dense");
    warnUnlessFreedMemoryReturned(log, "uncomment it in the systemd unit");
    // The experts run outside the graphs, from a cache under the budget (EdgeMoE).
    const hostRouted = await HostRoutedMoeModel.load(
      checkpoint,
      { ...lowerSpec, moeExecution: "host" },
      {
        ...modelOptions,
        experts: {
          budgetBytes: config.expertBudgetMb * 2 ** 20,
          expertThreads: config.expertThreads,
          formatOf:
            config.expertColdWeights &&
            expertFormatsFromCalibration(config, calibration, {
              numLayers: checkpoint.config.numLayers,
              numExperts: checkpoint.config.numExperts,
            }),
        },
      },
    );
    lowerModel = hostRouted;
    expertCacheStats = () => hostRouted.experts.stats();
  } else {
    lowerModel = await SegmentModel.load(checkpoint, lowerSpec, modelOptions);
  }
  // The graph is built (or was cached): a weight decoded for it is needed no more.
  checkpoint.releaseWeights?.();
  const lower = new SegmentSessions(lowerModel);
  // prom-client loads only when metrics are on: a device without them starts faster.
  const metrics =
    options.metrics &&
    new (await import("./edge-metrics.ts")).EdgeMetrics(options.metrics, {
      layers: checkpoint.config.numLayers,
      expertCache: expertCacheStats,
    });
  // The cloud: a fixed worker, or the owner of each session's shard in the placement map.
  const route = config.natsUrl
    ? await (
        await import("./placement-cloud-route.ts")
      ).PlacementCloudRoute.start(config.natsUrl, config.cluster, log, natsCredentialsOf(config))
    : config.cloudAddress
      ? new StaticCloudRoute(config.cloudAddress)
      : undefined;
  const cloud =
    route &&
    new CloudLinks(
      {
        ...DEFAULT_CLOUD_LINK_OPTIONS,
        codec: config.codec,
        deadlineMs: config.cloudDeadlineMs,
        keepaliveMs: config.keepaliveMs,
        tls: config.cloudTlsCa
          ? { ca: config.cloudTlsCa, cert: config.cloudTlsCert, key: config.cloudTlsKey }
          : undefined,
      },
      {
        modelId,
        ...splitIdentityOf(checkpoint, split),
      },
      route,
      metrics,
    );

  const limits = {
    ...DEFAULT_REQUEST_LIMITS,
    maxTokensLimit: config.maxTokensLimit,
    defaultMaxTokens: config.defaultMaxTokens,
    maxPromptTokens: config.maxPromptTokens,
    maxStreams: config.maxStreams,
    maxStreamsPerKey: config.maxStreamsPerKey,
    stallTimeoutMs: config.stallTimeoutMs,
  };
  const protos = loadTandemProtos();
  const context = {
    config: checkpoint.config,
    modelId,
    split,
    lower,
    tokenizer,
    chatTemplate,
    cloud,
    autoPolicy,
    draftPolicy: draftPolicy ?? autoPolicy,
    exitLayers: exits.map((e) => e.afterLayer),
    confidenceModels: calibration?.summary.confidence ?? [],
    apiKeys: config.apiKeys?.length ? new ApiKeys(config.apiKeys) : undefined,
    limits,
    metrics,
    // One set of places for both APIs: the limits are the agent's, not each API's.
    admission: new GenerationAdmission(limits),
    log,
  };
  const handlers = inferenceHandlers(context);
  const server = await startGrpcServer(
    [
      {
        name: "tandem.v1.Inference",
        // The handler decodes each request itself, to refuse malformed bytes as the client's fault.
        definition: withUndecodedRequests(protos.tandem.v1.Inference.service),
        handlers,
      },
    ],
    {
      host: config.host,
      port: config.port,
      tls: config.tlsCert && config.tlsKey ? { cert: config.tlsCert, key: config.tlsKey } : undefined,
      maxReceiveMessageBytes: maxRequestBytes(limits),
      log,
    },
  );
  let http: RunningHttpApi | undefined;
  if (httpListen && httpApi) {
    try {
      http = await (
        await httpApi
      ).startHttpApi(
        context,
        {
          ...httpListen,
          tls: config.tlsCert && config.tlsKey ? { cert: config.tlsCert, key: config.tlsKey } : undefined,
        },
        log,
      );
    } catch (error) {
      await server.shutdown(0);
      throw error;
    }
  }
  // Off the path to readiness: what the first escalation will need.
  if (cloud) void loadCircuitBreakers();
  log.info(
    {
      address: server.address,
      http: http?.address ?? null,
      split,
      exits: exits.map((e) => e.afterLayer),
      cloud: config.natsUrl ? `placement map of cluster ${config.cluster}` : (config.cloudAddress ?? null),
      calibrated: Boolean(calibration),
      calibratedTargets: calibratedTargets ?? null,
      chatTemplate: chatTemplate?.source ?? null,
    },
    "edge agent serving",
  );
  return {
    server,
    http,
    split,
    exitLayers: exits.map((e) => e.afterLayer),
    openSessions: () => lower.sessionIds.length,
    async close(graceMs) {
      await Promise.all([server.shutdown(graceMs), http?.close(graceMs)]);
      await cloud?.close();
      await lowerModel.release();
    },
  };
}

/**
 * Each expert's format from the calibration's measured activations: the experts carrying
 * expertHotShare of their layer's tokens keep `weights`, the rest take expertColdWeights.
 */
function expertFormatsFromCalibration(
  config: EdgeConfig,
  calibration: Calibration | undefined,
  model: { numLayers: number; numExperts: number },
): (layer: number, expert: number) => WeightFormat {
  const activations = calibration?.summary.expertActivations;
  if (!activations)
    throw new InvalidArgumentError(
      "expertColdWeights",
      "needs a calibration that measured the experts' activations (`tandem calibrate` on this MoE model)",
    );
  return expertFormatsByActivation(activations, model, {
    hot: config.weights,
    cold: config.expertColdWeights!,
    hotShare: config.expertHotShare,
  });
}
