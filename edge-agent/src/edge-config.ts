/** The edge agent's settings (JSON file, TANDEM_EDGE_* variables, flags): one schema, every default once. */
import { z } from "zod";
import {
  CLUSTER_NAME_SETTING,
  durationMs,
  listenAddressSetting,
  NATS_CREDENTIAL_SETTINGS,
  requireTogether,
} from "@tandem/common";
import {
  CODEC_NAMES,
  CONFIDENCE_METRICS,
  DEFAULT_HOT_SHARE,
  RUNTIME_SETTINGS,
  WEIGHT_FORMATS,
} from "@tandem/runtime";
import { API_KEY_HASH_PATTERN } from "@tandem/proto";
import { DEFAULT_CLOUD_LINK_OPTIONS } from "./cloud-link.ts";
import { DEFAULT_REQUEST_LIMITS } from "./inference-service.ts";

export const EDGE_ENV_PREFIX = "TANDEM_EDGE";

export const EXIT_POLICIES = ["threshold", "rolling-entropy", "budget"] as const;

/**
 * Expert threads with expertBudgetMb: none. On this project's machines (expert files in the
 * page cache, loads bound by CPU) threads and prefetch cut the loads a token waits for by
 * 2–3× but load 20–30% more experts in all, and decoded slower in 5 of 6 measured settings
 * (`moe` benchmark, edge_cache); they are for devices whose loads wait on storage.
 */
export const DEFAULT_EXPERT_THREADS = 0;

export const EDGE_CONFIG_SCHEMA = z
  .object({
    model: z
      .string()
      .min(1)
      .meta({ description: "checkpoint directory (config.json, *.safetensors, tokenizer.json)" }),
    calibration: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "calibration file from `tandem calibrate` (exit heads and thresholds)" }),
    target: RUNTIME_SETTINGS.target,
    draftTarget: z.number().gt(0).max(1).default(0.9).meta({
      description:
        "requests with verify (EXACT, ROLLBACK): the agreement target whose calibrated thresholds decide which tokens the edge answers; laxer than target, since the cloud checks them; resolved as target is; the `edge agent serving` log line names both targets used (calibratedTargets)",
    }),
    split: z.int().min(1).optional().meta({
      description: "layers run on the device (default: the calibration's, else the model's tandem.json)",
    }),
    exitLayers: z.array(z.int().min(1)).min(1).optional().meta({
      description: "exit layers without a calibration, comma-separated (default: the model's tandem.json)",
    }),
    metric: z.enum(CONFIDENCE_METRICS).default("prob").meta({
      description:
        "confidence metric without a calibration (a calibration brings its own, which may be its learned confidence)",
    }),
    threshold: z.number().default(0.9).meta({
      description: "confidence threshold without a calibration (rolling-entropy: the largest mean entropy)",
    }),
    policy: z.enum(EXIT_POLICIES).default("threshold").meta({
      description:
        "AUTO-mode policy: thresholds (calibrated when a calibration is given), rolling entropy (Entropy Adaptive Decoding) or an escalation budget",
    }),
    rollingWindow: z.int().min(1).default(8).meta({ description: "rolling-entropy: tokens in the window" }),
    escalationRate: z
      .number()
      .gt(0)
      .lt(1)
      .default(0.3)
      .meta({ description: "budget: share of tokens to escalate" }),
    cloudAddress: z.string().min(1).optional().meta({
      description:
        "host:port of a cloud worker, or of a load balancer in front of them: workers redirect each session to its owner (none: edge only)",
    }),
    natsUrl: z.string().min(1).optional().meta({
      description:
        "NATS of the control plane: route each session to its shard's worker (replaces cloudAddress)",
    }),
    ...NATS_CREDENTIAL_SETTINGS,
    cluster: CLUSTER_NAME_SETTING,
    codec: z.enum(CODEC_NAMES).default("fp16").meta({ description: "hidden-state codec on the wire" }),
    cloudDeadlineMs: durationMs(1).default(DEFAULT_CLOUD_LINK_OPTIONS.deadlineMs).meta({
      description:
        "longest wait for a cloud answer, or for a failed worker's session to reach its new owner, before answering on the device",
    }),
    keepaliveMs: durationMs(1000)
      .default(DEFAULT_CLOUD_LINK_OPTIONS.keepaliveMs)
      .meta({ description: "HTTP/2 keepalive interval to the cloud" }),
    host: z.string().min(1).default("127.0.0.1").meta({ description: "address of the public API" }),
    port: z
      .int()
      .min(0)
      .max(65535)
      .default(50051)
      .meta({ description: "port of the public API (0 picks one)" }),
    httpAddress: listenAddressSetting({
      default: "127.0.0.1:8080",
      example: "127.0.0.1:8080",
      description:
        "host:port of the OpenAI-compatible HTTP API (/v1/models, /v1/completions, /v1/chat/completions); empty disables it",
    }),
    maxTokensLimit: z
      .int()
      .min(1)
      .default(DEFAULT_REQUEST_LIMITS.maxTokensLimit)
      .meta({ description: "largest max_tokens a request may ask for" }),
    defaultMaxTokens: z
      .int()
      .min(1)
      .default(DEFAULT_REQUEST_LIMITS.defaultMaxTokens)
      .meta({ description: "max_tokens when a request leaves it 0" }),
    maxPromptTokens: z
      .int()
      .min(1)
      .default(DEFAULT_REQUEST_LIMITS.maxPromptTokens)
      .meta({ description: "longest prompt accepted, in tokens" }),
    maxStreams: z
      .int()
      .min(1)
      .default(DEFAULT_REQUEST_LIMITS.maxStreams)
      .meta({ description: "generations running at once; one more gets RESOURCE_EXHAUSTED" }),
    maxStreamsPerKey: z
      .int()
      .min(1)
      .default(DEFAULT_REQUEST_LIMITS.maxStreamsPerKey)
      .meta({ description: "generations running at once per API key" }),
    stallTimeoutMs: durationMs(100)
      .default(DEFAULT_REQUEST_LIMITS.stallTimeoutMs)
      .meta({ description: "a client that reads nothing for this long is cut and its session released" }),
    threads: RUNTIME_SETTINGS.threads,
    weights: RUNTIME_SETTINGS.weights.meta({ description: "weight format of the device segment" }),
    quantBlockSize: RUNTIME_SETTINGS.quantBlockSize,
    int4HeadBits: RUNTIME_SETTINGS.int4HeadBits,
    expertColdWeights: z.enum(WEIGHT_FORMATS).optional().meta({
      description:
        "MoE with expertBudgetMb: format of the experts that carry the least traffic (beyond expertHotShare of their layer's activations in the calibration); the others keep `weights`",
    }),
    expertHotShare: z.number().gt(0).max(1).default(DEFAULT_HOT_SHARE).meta({
      description: "expertColdWeights: share of each layer's activations the experts kept in `weights` carry",
    }),
    expertBudgetMb: z.number().gt(0).optional().meta({
      description:
        "MoE models: MB of expert weights the device keeps loaded; it loads others from disk as tokens are routed to them, least recently used out (unset: every expert in the segment's graph)",
    }),
    expertThreads: z.number().int().min(0).max(16).default(DEFAULT_EXPERT_THREADS).meta({
      description:
        "With expertBudgetMb: threads that hold and run the experts, so that a step's missing experts load in parallel and the next layer's likely experts load while its attention runs (0: in the agent's own thread, where a load stops everything); for devices whose expert loads wait on storage",
    }),
    tlsCert: z
      .string()
      .min(1)
      .optional()
      .meta({ description: "PEM certificate of the public API (with tlsKey: clients connect over TLS)" }),
    tlsKey: z.string().min(1).optional().meta({ description: "PEM private key of tlsCert" }),
    apiKeys: z
      .array(z.string().regex(API_KEY_HASH_PATTERN, "must be a SHA-256 hex digest (see `tandem api-key`)"))
      .optional()
      .meta({
        description:
          "SHA-256 (hex) of each API key the public API accepts, comma-separated; clients send `authorization: Bearer KEY`",
      }),
    insecure: z.boolean().default(false).meta({
      description: "serve the public API without TLS and API keys on an address other machines reach (warns)",
    }),
    cloudTlsCa: z.string().min(1).optional().meta({
      description: "PEM CA of the deployment: connect to cloud workers over TLS and verify them against it",
    }),
    cloudTlsCert: z.string().min(1).optional().meta({
      description: "PEM certificate of this device (`tandem certs issue-device`), presented to workers",
    }),
    cloudTlsKey: z.string().min(1).optional().meta({ description: "PEM private key of cloudTlsCert" }),
  })
  .strict()
  .superRefine((config, ctx) => {
    requireTogether(config, ctx, ["tlsCert", "tlsKey"]);
    requireTogether(config, ctx, ["cloudTlsCert", "cloudTlsKey"]);
    // The CA verifies workers without a device certificate too: it is not required back.
    if (config.cloudTlsCert !== undefined && config.cloudTlsCa === undefined)
      ctx.addIssue({ code: "custom", path: ["cloudTlsCa"], message: "required with cloudTlsCert" });
  });

export type EdgeConfig = z.output<typeof EDGE_CONFIG_SCHEMA>;
