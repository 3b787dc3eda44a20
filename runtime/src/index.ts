/**
 * @tandem/runtime: the model engine shared by edge and cloud. Checkpoints, segment graphs
 * on ONNX Runtime, sessions with their KV, exit policies, calibration, hidden-state
 * codecs and the collaborative loop; (tests take a reference forward and random checkpoints
 * from @tandem/runtime/testing).
 */

// Checkpoints
export { loadCheckpoint, type LoadCheckpointOptions } from "./checkpoint/load-checkpoint.ts";
export { readDeployment, type Deployment } from "./checkpoint/deployment-file.ts";
export {
  DEFAULT_INSPECT_CONTEXT,
  inspectCheckpoint,
  representativeSplits,
  RSS_ALLOWANCE_BYTES,
  RSS_WEIGHT_FACTOR,
  type CheckpointInspection,
  type InspectOptions,
  type SegmentEstimate,
  type SplitEstimate,
} from "./checkpoint/inspect-checkpoint.ts";
export type { ModelArchitecture, ModelConfig } from "./checkpoint/model-config.ts";
export { rotaryInverseFrequencies } from "./checkpoint/rope-frequencies.ts";
export type { Checkpoint, ModelWeights, WeightTensor } from "./checkpoint/model-weights.ts";
export type { ExitAdapterWeights } from "./checkpoint/exit-adapters.ts";

// Segment graphs and the engine
export {
  DEFAULT_QUANT_BLOCK_SIZE,
  defaultInt4HeadBits,
  headBits,
  INT4_HEAD_BITS,
  type Int4HeadBits,
  QUANT_BLOCK_SIZES,
  segmentSpec,
  WEIGHT_FORMATS,
  type ExitHeadSpec,
  type LinearExitMap,
  type MoeExecution,
  type SegmentSpec,
  type WeightFormat,
} from "./graph/segment-spec.ts";
export { cloudSegmentSpec, edgeSegmentSpec, type QuantizationOptions } from "./graph/deployment-specs.ts";
export {
  headWeightBytes,
  kvBytesPerPosition,
  linearWeightBytes,
  segmentWeightBytes,
  type SegmentWeightBytes,
} from "./graph/segment-weight-bytes.ts";
export { defaultGraphCacheDir, ensureSegmentGraph, segmentGraphPath } from "./graph/graph-cache.ts";
/** The ONNX graph writer, loaded on demand: a process whose graphs are cached never needs it. */
export const loadOnnxGraphBuilder = async () => {
  const { OnnxGraphBuilder, InMemoryExternalData } = await import("./graph/onnx-graph-builder.ts");
  return { OnnxGraphBuilder, InMemoryExternalData };
};
export { RUNTIME_SETTINGS } from "./runtime-settings.ts";
export {
  SegmentModel,
  type MoeRouting,
  type SegmentModelOptions,
  type SegmentRunner,
} from "./engine/segment-model.ts";
export {
  type ExpertRunner,
  HostRoutedMoeModel,
  type HostRoutedMoeOptions,
} from "./engine/host-routed-moe-model.ts";
export {
  type ActivationFormatOptions,
  DEFAULT_HOT_SHARE,
  expertFormatsByActivation,
} from "./engine/expert-formats.ts";
export {
  ExpertCache,
  type ExpertCacheOptions,
  type ExpertCacheStats,
  type ExpertStore,
  FREED_MEMORY_ENV,
  warnUnlessFreedMemoryReturned,
} from "./engine/expert-cache.ts";
export { HUGE_PAGES_ENV } from "./engine/huge-pages.ts";
export { ExpertThreads } from "./engine/expert-threads.ts";
export { RouterPredictor } from "./engine/expert-predictor.ts";
export { KV_BLOCK_POSITIONS } from "./engine/kv-slot.ts";
export {
  exitSignalAt,
  SegmentSessions,
  type ExitResult,
  type SegmentInput,
  type SegmentSessionsOptions,
  type SegmentStep,
} from "./engine/segment-sessions.ts";
export { computeLogits } from "./engine/compute-logits.ts";

// Exits and calibration
export {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  BudgetExitPolicy,
  CONFIDENCE_METRICS,
  EXIT_METRICS,
  RollingEntropyPolicy,
  ThresholdExitPolicy,
  type ConfidenceMetric,
  type ExitMetric,
  type ExitPolicy,
  type ExitSignal,
  type ExitThreshold,
} from "./exits/exit-policy.ts";
export {
  confidenceFeatureNames,
  confidenceFeatures,
  learnedConfidence,
  quadraticTermCount,
  readsKlPrevious,
  type ConfidenceModel,
} from "./exits/confidence-model.ts";
export { calibrate, type CalibrateOptions } from "./calibration/calibrate.ts";
export { fitLogistic, type LogisticFit, type LogisticOptions } from "./calibration/logistic-regression.ts";
export {
  calibratedExitHeads,
  calibratedExitPolicy,
  checkCalibrationMatches,
  policyForTarget,
  readCalibration,
  writeCalibration,
  calibrationOutputProblem,
  type CalibratedPolicy,
  type Calibration,
  type CalibrationSummary,
  type CurvePoint,
} from "./calibration/calibration-file.ts";
export { evaluatePolicy, type PositionRecord } from "./calibration/threshold-search.ts";

// Hidden states on the wire
export { CODEC_NAMES, getCodec, type CodecName, type HiddenStateCodec } from "./codec/hidden-state-codec.ts";
export { activations, type ActivationOptions } from "./codec/synthetic-activations.ts";
export { HadamardRotation } from "./codec/hadamard-rotation.ts";

// Generation
export {
  GREEDY,
  MAX_TOP_LOGPROBS,
  SAMPLING_LIMITS,
  logprobsOf,
  penaltyFromWire,
  validateSampling,
  type HeadAnswer,
  type SamplingOptions,
  type TokenLogprobs,
} from "./generation/sampler.ts";
export {
  DEFAULT_GENERATE_OPTIONS,
  defaultMaxDraftTokens,
  MAX_DRAFT_TOKENS,
  SplitGenerator,
  VERIFY_MODES,
  type GenerateOptions,
  type GeneratedToken,
  type GenerationItem,
  type Rollback,
  type SplitGeneratorStats,
  type VerifyMode,
  type TokenSource,
  type UpperAnswer,
  type UpperFrame,
  type UpperSegment,
} from "./generation/split-generator.ts";
export { loadLocalSplit, type LocalSplit, type LocalSplitOptions } from "./generation/local-split.ts";

// The escalation protocol (edge ↔ upper segment), its upper side, and an in-process upper segment
export {
  CLOSE_MESSAGE,
  DEFAULT_ESCALATION_LIMITS,
  InvalidReplyError,
  MAX_REDIRECTS,
  SessionMovedError,
  checkFrameReply,
  checkOpenedReply,
  codecFromWire,
  codecToWire,
  frameMessage,
  movedReply,
  openMessage,
  replyRequestId,
  sessionContextKey,
  traceContextError,
  sessionIdOfContextKey,
  sessionMovedOf,
  splitIdentityOf,
  type EscalationLimits,
  type FrameOutcome,
  type FrameTarget,
  type FrameToApply,
  type SplitIdentity,
} from "./protocol/escalation-protocol.ts";
export {
  EscalationSession,
  type EscalationCounters,
  type SessionContexts,
  type UpperSideIdentity,
} from "./protocol/escalation-session.ts";
export {
  applyFrameToSession,
  LocalSessionContexts,
  LocalUpperSegment,
  type LocalUpperSegmentOptions,
} from "./protocol/local-upper-segment.ts";
export { SessionTokens } from "./protocol/session-tokens.ts";
export { IncrementalDecoder, Tokenizer } from "./tokenizer/tokenizer.ts";
export {
  CHAT_TEMPLATE_FILE,
  ChatTemplate,
  type ChatMessage,
  type ChatRenderOptions,
} from "./tokenizer/chat-template.ts";
