/**
 * What a generation request may ask for, whichever API it came through: the prompt
 * (text, token ids or a conversation), its length limits, stop sequences, sampling, the
 * mode and an exit policy override — checked once here against the agent's limits and
 * the model, with errors naming the field as the caller's API spells it (gRPC's
 * `sampling.temperature`, the OpenAI API's `temperature`).
 */
import {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  BudgetExitPolicy,
  type ChatMessage,
  type ChatTemplate,
  DEFAULT_GENERATE_OPTIONS,
  defaultMaxDraftTokens,
  type ConfidenceMetric,
  type ConfidenceModel,
  type ExitMetric,
  type ExitPolicy,
  MAX_TOP_LOGPROBS,
  MAX_DRAFT_TOKENS,
  type ModelConfig,
  type SamplingOptions,
  ThresholdExitPolicy,
  validateSampling,
  type Tokenizer,
  type VerifyMode,
} from "@tandem/runtime";
import { FailedPreconditionError, InvalidArgumentError } from "@tandem/common";
import type { CloudLinks } from "./cloud-link.ts";

/** What one generation request may ask for. */
export interface RequestLimits {
  /** Largest max_tokens. @default 1024 */
  maxTokensLimit: number;
  /** max_tokens when a request leaves it 0. @default 64 */
  defaultMaxTokens: number;
  /** Longest prompt, in tokens. @default 2048 */
  maxPromptTokens: number;
  /** Most stop sequences. @default 8 */
  maxStops: number;
  /** Longest stop sequence, in characters. @default 64 */
  maxStopLength: number;
  /** Longest prompt text, in characters (checked before tokenizing); for messages, their contents together. @default 65536 */
  maxPromptChars: number;
  /** Most messages in a `messages` prompt. @default 256 */
  maxMessages: number;
  /** Generations running at once; one more gets RESOURCE_EXHAUSTED. @default 64 */
  maxStreams: number;
  /** Generations running at once per API key (when keys are configured). @default 16 */
  maxStreamsPerKey: number;
  /** A client that takes no event for this long is cut (CANCELLED) and its session released. @default 30000 */
  stallTimeoutMs: number;
}

export const DEFAULT_REQUEST_LIMITS: RequestLimits = {
  maxTokensLimit: 1024,
  defaultMaxTokens: DEFAULT_GENERATE_OPTIONS.maxTokens,
  maxPromptTokens: 2048,
  maxStops: 8,
  maxStopLength: 64,
  maxPromptChars: 64 * 1024,
  maxMessages: 256,
  maxStreams: 64,
  maxStreamsPerKey: 16,
  stallTimeoutMs: 30_000,
};

export type GenerationMode = "MODE_AUTO" | "MODE_EDGE_ONLY" | "MODE_CLOUD_ONLY";
export const GENERATION_MODES: readonly GenerationMode[] = ["MODE_AUTO", "MODE_EDGE_ONLY", "MODE_CLOUD_ONLY"];

/** The public API's verify modes (tandem.v1.Verify), and what the generator runs for each. */
export const VERIFY_BY_NAME: Readonly<Record<string, VerifyMode>> = {
  VERIFY_NONE: "none",
  VERIFY_ROLLBACK: "rollback",
  VERIFY_EXACT: "exact",
};

/** A request as it arrived, in the API's own terms but its types already checked. */
export interface GenerationInput {
  prompt: { text: string } | { tokenIds: number[] } | { messages: ChatMessage[] } | undefined;
  /** 0 or undefined: the agent's default. */
  maxTokens?: number;
  stop: string[];
  sampling: SamplingOptions;
  mode: string;
  exitPolicy?: { metric?: ExitMetric; threshold?: number; targetEscalationRate?: number };
  /** Report each token's log-probability and this many alternatives (0: the token's only). */
  topLogprobs?: number;
  /** A key of VERIFY_BY_NAME; undefined: VERIFY_NONE. */
  verify?: string;
  /** 0 or undefined: the default (8). */
  maxDraftTokens?: number;
}

/** How an API spells each field in its errors. */
export interface RequestFieldNames {
  prompt: string;
  text: string;
  tokenIds: string;
  messages: string;
  maxTokens: string;
  stop: string;
  /** Prefix of temperature, top_p, top_k, seed and the penalties ("" when they are top-level fields). */
  sampling: string;
  mode: string;
  /** Prefix of metric, threshold and target_escalation_rate. */
  exitPolicy: string;
  topLogprobs: string;
  verify: string;
  maxDraftTokens: string;
}

/** The request, checked and resolved against the agent: what the generation runs. */
export interface ValidRequest {
  ids: number[];
  maxTokens: number;
  stops: string[];
  sampling: SamplingOptions;
  mode: GenerationMode;
  policy: () => ExitPolicy;
  /** undefined: no log-probabilities. */
  topLogprobs?: number;
  verify: VerifyMode;
  maxDraftTokens: number;
}

/** What validation needs of the agent. */
export interface RequestContext {
  config: ModelConfig;
  modelId: string;
  tokenizer: Tokenizer;
  chatTemplate?: ChatTemplate;
  cloud?: CloudLinks;
  autoPolicy: () => ExitPolicy;
  /** The policy of verified requests (verify EXACT or ROLLBACK) that do not override it. */
  draftPolicy: () => ExitPolicy;
  exitLayers: number[];
  /** The calibration's confidence models, for a `learned` override (none without a calibration). */
  confidenceModels: ConfidenceModel[];
  limits: RequestLimits;
}

/**
 * The roles a `messages` prompt may use: those every chat template knows. "tool" (and
 * Llama's "ipython") are left out: a tool's answer belongs to an assistant tool call,
 * which the APIs cannot carry, and templates render a lone one inconsistently.
 */
const CHAT_ROLES: readonly string[] = ["system", "user", "assistant"];

/** `prefix.name`, or `name` alone for top-level fields. */
export function fieldName(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

export function validateRequest(
  input: GenerationInput,
  context: RequestContext,
  fields: RequestFieldNames,
): ValidRequest {
  const { limits, config } = context;
  const prompt = input.prompt;
  let ids: number[];
  if (prompt && "text" in prompt) {
    if (!prompt.text) throw new InvalidArgumentError(fields.text, "must not be empty");
    if (prompt.text.length > limits.maxPromptChars)
      throw new InvalidArgumentError(
        fields.text,
        `${prompt.text.length} characters exceed the limit ${limits.maxPromptChars}`,
      );
    ids = context.tokenizer.encodePrompt(prompt.text);
  } else if (prompt && "messages" in prompt) {
    if (!context.chatTemplate)
      throw new FailedPreconditionError(
        fields.messages,
        `the model ${context.modelId} has no chat template (neither chat_template.jinja nor a chat_template in tokenizer_config.json); send text or token ids`,
      );
    const messages = validMessages(prompt.messages, limits, fields.messages);
    const text = context.chatTemplate.render(messages, { field: fields.messages });
    // The template writes BOS and every other special token itself, as transformers has it.
    ids = context.tokenizer.encode(text);
  } else if (prompt && "tokenIds" in prompt) {
    ids = prompt.tokenIds;
    const bad = ids.findIndex((id) => !(Number.isInteger(id) && id >= 0 && id < config.vocabSize));
    if (bad >= 0)
      throw new InvalidArgumentError(
        `${fields.tokenIds}[${bad}]`,
        `${ids[bad]} is outside the vocabulary [0, ${config.vocabSize})`,
      );
  } else {
    throw new InvalidArgumentError(fields.prompt, "set text, token ids or messages");
  }
  if (ids.length === 0) throw new InvalidArgumentError(fields.prompt, "encodes to no tokens");
  if (ids.length > limits.maxPromptTokens)
    throw new InvalidArgumentError(
      fields.prompt,
      `${ids.length} tokens exceed the limit ${limits.maxPromptTokens}`,
    );
  const maxTokens = !input.maxTokens ? limits.defaultMaxTokens : input.maxTokens;
  if (!Number.isInteger(maxTokens) || maxTokens < 1)
    throw new InvalidArgumentError(fields.maxTokens, `must be a positive integer, got ${maxTokens}`);
  if (maxTokens > limits.maxTokensLimit)
    throw new InvalidArgumentError(
      fields.maxTokens,
      `${maxTokens} exceeds the limit ${limits.maxTokensLimit}`,
    );
  if (ids.length + maxTokens > config.maxPositions)
    throw new InvalidArgumentError(
      fields.maxTokens,
      `prompt + max_tokens = ${ids.length + maxTokens} exceeds the model's ${config.maxPositions} positions`,
    );
  if (input.stop.length > limits.maxStops)
    throw new InvalidArgumentError(
      fields.stop,
      `at most ${limits.maxStops} sequences, got ${input.stop.length}`,
    );
  input.stop.forEach((s, i) => {
    if (s.length === 0 || s.length > limits.maxStopLength)
      throw new InvalidArgumentError(
        `${fields.stop}[${i}]`,
        `must hold 1 to ${limits.maxStopLength} characters`,
      );
  });
  validateSampling(input.sampling, fields.sampling);
  if (
    input.topLogprobs !== undefined &&
    !(Number.isInteger(input.topLogprobs) && input.topLogprobs >= 0 && input.topLogprobs <= MAX_TOP_LOGPROBS)
  )
    throw new InvalidArgumentError(
      fields.topLogprobs,
      `must be an integer in [0, ${MAX_TOP_LOGPROBS}], got ${input.topLogprobs}`,
    );
  const mode = input.mode as GenerationMode;
  if (!GENERATION_MODES.includes(mode))
    throw new InvalidArgumentError(fields.mode, `unknown value ${input.mode}`);
  if (mode === "MODE_CLOUD_ONLY" && !context.cloud)
    throw new FailedPreconditionError(
      fields.mode,
      "CLOUD_ONLY needs a cloud worker, and this agent has none configured",
    );

  const verifyName = input.verify ?? "VERIFY_NONE";
  if (!Object.hasOwn(VERIFY_BY_NAME, verifyName))
    throw new InvalidArgumentError(fields.verify, `unknown value ${verifyName}`);
  const verify = VERIFY_BY_NAME[verifyName];
  let policy = verify === "none" ? context.autoPolicy : context.draftPolicy;
  const override = input.exitPolicy;
  if (override?.metric === "learned") {
    policy = learnedOverride(override, context, fields);
  } else if (override && (override.metric !== undefined || (override.targetEscalationRate ?? 0) !== 0)) {
    const metric: ConfidenceMetric = override.metric ?? "prob";
    const rate = override.targetEscalationRate ?? 0;
    const threshold = override.threshold ?? 0;
    if (rate !== 0) {
      if (!(rate > 0 && rate < 1))
        throw new InvalidArgumentError(
          fieldName(fields.exitPolicy, "target_escalation_rate"),
          `must be in (0, 1), got ${rate}`,
        );
      policy = () => new BudgetExitPolicy(rate, metric);
    } else {
      if (!Number.isFinite(threshold))
        throw new InvalidArgumentError(fieldName(fields.exitPolicy, "threshold"), "must be finite");
      policy = () => ThresholdExitPolicy.uniform(context.exitLayers, metric, threshold);
    }
  }
  if (mode === "MODE_EDGE_ONLY") policy = () => new AlwaysExitPolicy();
  if (mode === "MODE_CLOUD_ONLY") policy = () => new AlwaysDeferPolicy();

  if (verify !== "none" && mode === "MODE_EDGE_ONLY")
    throw new InvalidArgumentError(
      fields.verify,
      "EDGE_ONLY never contacts the cloud, which is what checks the tokens; use MODE_AUTO",
    );
  if (verify !== "none" && !context.cloud)
    throw new FailedPreconditionError(
      fields.verify,
      "checking the edge's tokens needs a cloud worker, and this agent has none configured",
    );
  const maxDraftTokens = input.maxDraftTokens || defaultMaxDraftTokens(verify);
  if (!(Number.isInteger(maxDraftTokens) && maxDraftTokens >= 1 && maxDraftTokens <= MAX_DRAFT_TOKENS))
    throw new InvalidArgumentError(
      fields.maxDraftTokens,
      `must be an integer in [0, ${MAX_DRAFT_TOKENS}] (0: ${DEFAULT_GENERATE_OPTIONS.maxDraftTokens.exact} with EXACT, ${DEFAULT_GENERATE_OPTIONS.maxDraftTokens.rollback} with ROLLBACK), got ${input.maxDraftTokens}`,
    );
  return {
    ids,
    maxTokens,
    stops: input.stop,
    sampling: input.sampling,
    mode,
    policy,
    topLogprobs: input.topLogprobs,
    // With every token the cloud's there is nothing of the edge's to check.
    verify: mode === "MODE_CLOUD_ONLY" ? "none" : verify,
    maxDraftTokens,
  };
}

/** The messages of a request, each with a known role and some content, within the limits. */
function validMessages(
  messages: readonly ChatMessage[],
  limits: RequestLimits,
  field: string,
): ChatMessage[] {
  if (messages.length === 0) throw new InvalidArgumentError(field, "must hold at least one message");
  if (messages.length > limits.maxMessages)
    throw new InvalidArgumentError(
      field,
      `${messages.length} messages exceed the limit ${limits.maxMessages}`,
    );
  let chars = 0;
  return messages.map(({ role, content }, i) => {
    if (!role) throw new InvalidArgumentError(`${field}[${i}].role`, "must not be empty");
    if (!CHAT_ROLES.includes(role))
      throw new InvalidArgumentError(
        `${field}[${i}].role`,
        `must be one of ${CHAT_ROLES.join(", ")}, got ${JSON.stringify(role.slice(0, 32))}`,
      );
    if (!content) throw new InvalidArgumentError(`${field}[${i}].content`, "must not be empty");
    chars += content.length;
    if (chars > limits.maxPromptChars)
      throw new InvalidArgumentError(
        `${field}[${i}].content`,
        `the messages' content reaches ${chars} characters here, over the limit ${limits.maxPromptChars}`,
      );
    return { role, content };
  });
}

/**
 * A request's own threshold on the calibration's learned confidence: the probability that
 * the exit's token is the full model's, at every exit with a model (the models score in
 * log-odds, so the threshold is turned into those).
 */
function learnedOverride(
  override: NonNullable<GenerationInput["exitPolicy"]>,
  context: RequestContext,
  fields: RequestFieldNames,
): () => ExitPolicy {
  const models = context.confidenceModels;
  if (models.length === 0)
    throw new FailedPreconditionError(
      fieldName(fields.exitPolicy, "metric"),
      "learned needs the agent to run with a calibration that has confidence models; this one has none",
    );
  if ((override.targetEscalationRate ?? 0) !== 0)
    throw new InvalidArgumentError(
      fieldName(fields.exitPolicy, "target_escalation_rate"),
      "applies to prob, margin and entropy; learned takes a threshold",
    );
  const probability = override.threshold ?? 0;
  if (!(probability > 0 && probability < 1))
    throw new InvalidArgumentError(
      fieldName(fields.exitPolicy, "threshold"),
      `learned takes a probability in (0, 1), got ${probability}`,
    );
  const logOdds = Math.log(probability / (1 - probability));
  const layers = models.map((m) => m.afterLayer);
  return () => ThresholdExitPolicy.uniform(layers, "learned", logOdds, models);
}
