/** Which exit policy a request runs: the agent's AUTO policy, its laxer one for verified requests, or the request's own. */
import { describe, expect, it } from "vitest";
import { FailedPreconditionError, InvalidArgumentError } from "@tandem/common";
import {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  confidenceFeatureNames,
  type ConfidenceModel,
  GREEDY,
  quadraticTermCount,
  ThresholdExitPolicy,
  type ExitPolicy,
  type ModelConfig,
  type Tokenizer,
} from "@tandem/runtime";
import type { CloudLinks } from "./cloud-link.ts";
import { GRPC_FIELDS } from "./inference-service.ts";
import {
  DEFAULT_REQUEST_LIMITS,
  validateRequest,
  type GenerationInput,
  type RequestContext,
} from "./generation-request.ts";

/** Two policies told apart by their answer to a signal no threshold below 1 turns down. */
const AUTO = new AlwaysDeferPolicy();
const DRAFT = new AlwaysExitPolicy();
const SIGNAL = { afterLayer: 2, token: 1, prob: 0.5, margin: 0.1, entropy: 1 };
const answersAtExit = (policy: ExitPolicy) => policy.decide([SIGNAL]).exit !== undefined;

/** A confidence model at the exit after 2 whose log-odds are 10·prob − 5 (0 at SIGNAL's prob 0.5). */
const LEARNED: ConfidenceModel = {
  afterLayer: 2,
  features: confidenceFeatureNames(false),
  mean: [0, 0, 0, 0, 0],
  scale: [1, 1, 1, 1, 1],
  weights: Array.from({ length: quadraticTermCount(5) }, (_, i) => (i === 0 ? 10 : 0)),
  bias: -5,
};

function context(cloud: boolean, confidenceModels: ConfidenceModel[] = []): RequestContext {
  return {
    config: { vocabSize: 100, maxPositions: 512 } as ModelConfig,
    modelId: "m",
    tokenizer: {} as Tokenizer,
    // Validation only asks whether a cloud is configured.
    cloud: cloud ? ({} as CloudLinks) : undefined,
    autoPolicy: () => AUTO,
    draftPolicy: () => DRAFT,
    exitLayers: [2],
    confidenceModels,
    limits: DEFAULT_REQUEST_LIMITS,
  };
}

/** As the gRPC API spells them. */
const FIELDS = GRPC_FIELDS;

const request = (fields: Partial<GenerationInput>): GenerationInput => ({
  prompt: { tokenIds: [1, 2, 3] },
  stop: [],
  sampling: GREEDY,
  mode: "MODE_AUTO",
  ...fields,
});

describe("a request's exit policy", () => {
  it("is the agent's AUTO policy without verify, and its draft policy with EXACT or ROLLBACK", () => {
    expect(answersAtExit(validateRequest(request({}), context(true), FIELDS).policy())).toBe(false);
    for (const verify of ["VERIFY_EXACT", "VERIFY_ROLLBACK"]) {
      const valid = validateRequest(request({ verify }), context(true), FIELDS);
      expect(answersAtExit(valid.policy())).toBe(true);
      expect(valid.verify).toBe(verify === "VERIFY_EXACT" ? "exact" : "rollback");
    }
  });

  it("is the request's own override, verified or not", () => {
    const valid = validateRequest(
      request({ verify: "VERIFY_EXACT", exitPolicy: { metric: "prob", threshold: 0.9 } }),
      context(true),
      FIELDS,
    );
    expect(valid.policy()).toBeInstanceOf(ThresholdExitPolicy);
    expect(answersAtExit(valid.policy())).toBe(false);
  });

  it("may threshold the calibration's learned confidence, as a probability that the exit's token is the full model's", () => {
    const at = (threshold: number) =>
      validateRequest(
        request({ exitPolicy: { metric: "learned", threshold } }),
        context(true, [LEARNED]),
        FIELDS,
      ).policy();
    // SIGNAL's learned log-odds are 0: a probability of 0.5.
    expect(answersAtExit(at(0.4))).toBe(true);
    expect(answersAtExit(at(0.6))).toBe(false);
  });

  it("refuses learned on an agent without confidence models, and a learned threshold outside (0, 1) or with an escalation rate, naming the field", () => {
    const learned =
      (exitPolicy: GenerationInput["exitPolicy"], models: ConfidenceModel[] = [LEARNED]) =>
      () =>
        validateRequest(request({ exitPolicy }), context(true, models), FIELDS);
    expect(learned({ metric: "learned", threshold: 0.9 }, [])).toThrow(FailedPreconditionError);
    expect(learned({ metric: "learned", threshold: 0.9 }, [])).toThrow(/^exit_policy\.metric: /);
    for (const threshold of [0, 1, 2, NaN, undefined])
      expect(learned({ metric: "learned", threshold })).toThrow(/^exit_policy\.threshold: .*\(0, 1\)/);
    for (const targetEscalationRate of [0.3, NaN])
      expect(learned({ metric: "learned", threshold: 0.9, targetEscalationRate })).toThrow(
        /^exit_policy\.target_escalation_rate: /,
      );
  });

  it("refuses an escalation rate that is not a number, rather than ignoring it", () => {
    for (const exitPolicy of [
      { targetEscalationRate: NaN },
      { metric: "margin" as const, targetEscalationRate: NaN },
    ])
      expect(() => validateRequest(request({ exitPolicy }), context(true), FIELDS)).toThrow(
        /^exit_policy\.target_escalation_rate: must be in \(0, 1\)/,
      );
  });

  it("checks nothing with CLOUD_ONLY, and refuses verify with EDGE_ONLY or without a cloud, naming it", () => {
    expect(
      validateRequest(request({ verify: "VERIFY_EXACT", mode: "MODE_CLOUD_ONLY" }), context(true), FIELDS)
        .verify,
    ).toBe("none");
    expect(() =>
      validateRequest(request({ verify: "VERIFY_EXACT", mode: "MODE_EDGE_ONLY" }), context(true), FIELDS),
    ).toThrow(InvalidArgumentError);
    expect(() => validateRequest(request({ verify: "VERIFY_ROLLBACK" }), context(false), FIELDS)).toThrow(
      FailedPreconditionError,
    );
    expect(() => validateRequest(request({ verify: "VERIFY_SOMETIMES" }), context(true), FIELDS)).toThrow(
      /^verify: /,
    );
    // A name the lookup table inherits is no verify mode either.
    expect(() => validateRequest(request({ verify: "constructor" }), context(true), FIELDS)).toThrow(
      /^verify: /,
    );
    expect(() =>
      validateRequest(request({ verify: "VERIFY_EXACT", maxDraftTokens: 65 }), context(true), FIELDS),
    ).toThrow(/^max_draft_tokens: /);
  });

  it("drafts up to 16 tokens per check with EXACT and streams up to 8 unchecked with ROLLBACK, unless the request says", () => {
    const limit = (fields: object) => validateRequest(request(fields), context(true), FIELDS).maxDraftTokens;
    expect(limit({ verify: "VERIFY_EXACT" })).toBe(16);
    expect(limit({ verify: "VERIFY_EXACT", maxDraftTokens: 0 })).toBe(16);
    expect(limit({ verify: "VERIFY_ROLLBACK" })).toBe(8);
    expect(limit({ verify: "VERIFY_ROLLBACK", maxDraftTokens: 5 })).toBe(5);
    expect(limit({ verify: "VERIFY_EXACT", maxDraftTokens: 64 })).toBe(64);
  });
});
