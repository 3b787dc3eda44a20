/** The edge agent's configuration schema (JSON file, TANDEM_EDGE_* variables, flags). */
import type { ConfigSchema, ConfigValues } from "@tandem/common";

export const EDGE_CONFIG_SCHEMA = {
  model: { type: "string", description: "checkpoint directory (config.json, *.safetensors, tokenizer.json)" },
  calibration: {
    type: "string",
    default: null,
    description: "calibration file from 'tandem calibrate' (exit heads and thresholds)",
  },
  target: {
    type: "number",
    default: 0.99,
    min: 0,
    max: 1,
    description: "agreement target whose calibrated thresholds to use",
  },
  split: {
    type: "integer",
    default: null,
    min: 1,
    description: "layers run on the device (default: the calibration's, else models' tandem.json)",
  },
  exitLayers: {
    type: "string",
    default: null,
    description: "comma-separated exit layers when there is no calibration",
  },
  metric: {
    type: "string",
    default: "prob",
    choices: ["prob", "margin", "entropy"],
    description: "confidence metric without calibration",
  },
  threshold: { type: "number", default: 0.9, description: "confidence threshold without calibration" },
  policy: {
    type: "string",
    default: "threshold",
    choices: ["threshold", "rolling-entropy", "budget"],
    description:
      "AUTO-mode policy: thresholds (calibrated when a calibration is given), rolling entropy (EAD) or an escalation budget",
  },
  rollingWindow: {
    type: "integer",
    default: 8,
    min: 1,
    description: "rolling-entropy: tokens in the window (threshold = max mean entropy)",
  },
  escalationRate: {
    type: "number",
    default: 0.3,
    min: 0.001,
    max: 0.999,
    description: "budget: share of tokens to escalate",
  },
  cloudAddress: {
    type: "string",
    default: null,
    description: "host:port of a cloud worker (none: edge only)",
  },
  natsUrl: {
    type: "string",
    default: null,
    description:
      "NATS of the control plane: route each session to its shard's worker (replaces cloudAddress)",
  },
  cluster: { type: "string", default: "default", description: "control-plane cluster name" },
  codec: {
    type: "string",
    default: "fp16",
    choices: ["fp32", "fp16", "int8", "int4"],
    description: "hidden-state codec on the wire",
  },
  cloudDeadlineMs: {
    type: "integer",
    default: 2000,
    min: 1,
    description: "longest wait for a cloud answer before answering locally",
  },
  keepaliveMs: {
    type: "integer",
    default: 10000,
    min: 1000,
    description: "HTTP/2 keepalive interval to the cloud",
  },
  host: { type: "string", default: "127.0.0.1", description: "address of the public API" },
  port: {
    type: "integer",
    default: 50051,
    min: 0,
    max: 65535,
    description: "port of the public API (0 picks one)",
  },
  maxTokensLimit: {
    type: "integer",
    default: 1024,
    min: 1,
    description: "largest max_tokens a request may ask for",
  },
  defaultMaxTokens: {
    type: "integer",
    default: 64,
    min: 1,
    description: "max_tokens when a request leaves it 0",
  },
  maxPromptTokens: { type: "integer", default: 2048, min: 1, description: "longest prompt accepted" },
  threads: { type: "integer", default: 1, min: 1, description: "ONNX Runtime threads" },
  weights: {
    type: "string",
    default: "fp32",
    choices: ["fp32", "int8", "int4"],
    description: "weight format of the device segment",
  },
} as const satisfies ConfigSchema;

export type EdgeConfig = ConfigValues<typeof EDGE_CONFIG_SCHEMA>;
