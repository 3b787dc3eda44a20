/**
 * Verified decoding in the collab benchmark (verify EXACT and ROLLBACK), for one split:
 *   - in-process, on every prompt: agreement of the tokens that stand with cloud-only
 *     decoding (EXACT must be 1.0), edge tokens accepted per round trip, rollbacks per 100
 *     tokens, and the cloud's compute per generated token against a cloud-only deployment
 *     (the cloud's calls recorded and replayed back to back, as cloud-compute.ts times them),
 *     each mode at its default draft limit and at the others of DRAFT_LIMITS;
 *   - over the emulated link with real edge-agent and cloud-worker processes: per-token
 *     latency as the client sees it (p50 of the gaps between token events, and the mean
 *     time per token, first token included), against cloud-only on the same link.
 * The edge drafts with the calibrated policy of DRAFT_TARGET (the edge's `draftTarget`, its
 * default; the nearest target the calibration holds at or above it): checked tokens need not
 * be right, so a laxer policy than AUTO's 99% drafts more and is still exact.
 */
import {
  AlwaysDeferPolicy,
  AlwaysExitPolicy,
  calibratedExitHeads,
  type GenerationItem,
  loadLocalSplit,
  LocalUpperSegment,
  policyForTarget,
  SplitGenerator,
  calibratedExitPolicy,
  DEFAULT_GENERATE_OPTIONS,
  defaultMaxDraftTokens,
  type SplitGeneratorStats,
  type VerifyMode,
} from "@tandem/runtime";
import { generate, startProgram } from "@tandem/testkit";
import { median, percentile, tokenAgreement } from "../statistics.ts";
import { DEMO_MODEL } from "../bench-paths.ts";
import { cloudBehindLink, type Context } from "./collab-context.ts";
import { RecordingUpper, replay } from "./cloud-compute.ts";

/** The calibrated agreement target whose thresholds decide how far the edge drafts (tandem-edge's default draftTarget). */
export const DRAFT_TARGET = 0.9;

const VERIFIED: VerifyMode[] = ["exact", "rollback"];

/** The tokens a client shows once it has applied the rollbacks. */
function standing(items: GenerationItem[]): number[] {
  const tokens: number[] = [];
  let first: number | undefined;
  for (const item of items) {
    if (item.kind === "rollback") tokens.length = item.position - first!;
    else {
      first ??= item.position;
      tokens.push(item.token);
    }
  }
  return tokens;
}

/** A way of decoding with verification that the in-process part measures. */
interface Variant {
  verify: VerifyMode;
  maxDraftTokens: number;
}

/**
 * The limits on drafts (max_draft_tokens) both verified modes are measured at: EXACT checks
 * a run of drafts per round trip, ROLLBACK sends a check every so many unchecked tokens.
 * Each mode's default (DEFAULT_GENERATE_OPTIONS.maxDraftTokens) is always among them.
 */
export const DRAFT_LIMITS = [
  ...new Set([
    4,
    8,
    16,
    32,
    DEFAULT_GENERATE_OPTIONS.maxDraftTokens.exact,
    DEFAULT_GENERATE_OPTIONS.maxDraftTokens.rollback,
  ]),
].sort((a, b) => a - b);

const variantName = (verify: VerifyMode, limit: number) => `${verify}-${limit}`;

/** One prompt decoded by a variant: the cloud's calls, the tokens that stand, what was yielded, the generator's counts. */
interface VariantRun {
  calls: RecordingUpper["calls"];
  tokens: number[];
  items: GenerationItem[];
  stats: SplitGeneratorStats;
}

/**
 * In-process: what each verified mode leaves standing at each of DRAFT_LIMITS, how much it
 * drafts and keeps, and the cloud's compute.
 */
async function inProcess(ctx: Context, maxTokens: number) {
  const { checkpoint, calibration, split } = ctx;
  const whole = await loadLocalSplit(checkpoint);
  const local = await loadLocalSplit(checkpoint, { split, exits: calibratedExitHeads(calibration) });
  const draftPolicy = policyForTarget(calibration, DRAFT_TARGET);
  const variants = new Map<string, Variant>(
    VERIFIED.flatMap((verify) =>
      DRAFT_LIMITS.map((maxDraftTokens): [string, Variant] => [
        variantName(verify, maxDraftTokens),
        { verify, maxDraftTokens },
      ]),
    ),
  );
  try {
    const cloudOnly: number[][] = [];
    // Per variant, one run per prompt.
    const runs = new Map<string, VariantRun[]>();
    for (const [i, prompt] of ctx.prompts.entries()) {
      const reference = new SplitGenerator(
        local.lower,
        new LocalUpperSegment(local.upper!, `cloud-${i}`),
        new AlwaysDeferPolicy(),
      );
      const tokens: number[] = [];
      for await (const t of reference.tokens(prompt, { maxTokens })) tokens.push(t.token);
      cloudOnly.push(tokens);
      for (const [name, { verify, maxDraftTokens }] of variants) {
        const recording = new RecordingUpper(new LocalUpperSegment(local.upper!, `${name}-${i}`));
        const generator = new SplitGenerator(
          local.lower,
          recording,
          calibratedExitPolicy(calibration, draftPolicy),
        );
        const items: GenerationItem[] = [];
        for await (const item of generator.generate(prompt, { maxTokens, verify, maxDraftTokens }))
          items.push(item);
        await recording.close();
        runs.set(name, [
          ...(runs.get(name) ?? []),
          { calls: recording.calls, tokens: standing(items), items, stats: generator.stats },
        ]);
      }
    }
    // The cloud's calls replayed back to back against the whole model decoding the same
    // prompts, interleaved in rounds (cloud-compute.ts says why).
    // A count summed over `name`'s runs, prompt by prompt.
    const total = (name: string, count: (run: VariantRun, prompt: number) => number) =>
      runs.get(name)!.reduce((n, run, i) => n + count(run, i), 0);
    const standingTokens = (name: string) => total(name, (r) => r.tokens.length);
    const rounds = ctx.smoke ? 1 : 5;
    const relative = new Map<string, number[]>();
    for (let round = 0; round < rounds; round++) {
      let wholeMs = 0;
      let wholeTokens = 0;
      const ms = new Map<string, number>();
      for (const [i, prompt] of ctx.prompts.entries()) {
        const generator = new SplitGenerator(whole.lower, undefined, new AlwaysExitPolicy());
        for await (const _ of generator.tokens(prompt, { maxTokens })) wholeTokens++;
        wholeMs += generator.stats.lowerMs;
        for (const name of variants.keys()) {
          const run = runs.get(name)![i];
          ms.set(
            name,
            (ms.get(name) ?? 0) + (await replay(local.upper!, run.calls, `v${round}.${i}.${name}`)),
          );
        }
      }
      for (const name of variants.keys())
        relative.set(name, [
          ...(relative.get(name) ?? []),
          ms.get(name)! / standingTokens(name) / (wholeMs / wholeTokens),
        ]);
    }
    const figures = (name: string) => {
      const tokens = standingTokens(name);
      const accepted = total(name, (r) => r.stats.acceptedTokens);
      const escalations = total(name, (r) => r.stats.escalations);
      const agreements = runs.get(name)!.map((r, i) => tokenAgreement(r.tokens, cloudOnly[i]));
      return {
        agreement_with_cloud_only: agreements.reduce((a, b) => a + b, 0) / agreements.length,
        cloud_compute_saved: 1 - median(relative.get(name)!),
        cloud_compute_relative_per_round: relative.get(name),
        mean_accepted_per_round_trip: accepted / Math.max(1, escalations),
        drafted_tokens: total(name, (r) => r.stats.draftedTokens),
        accepted_tokens: accepted,
        round_trips_per_token: escalations / tokens,
        // What the cloud ran per token that stands, prompts excluded (deterministic, unlike
        // its timed compute): positions carried in frames, rejected drafts included.
        cloud_positions_per_token:
          total(name, (r, i) => r.calls.reduce((m, c) => m + c.count, 0) - ctx.prompts[i].length) / tokens,
        rollbacks_per_100_tokens:
          (100 * total(name, (r) => r.items.filter((x) => x.kind === "rollback").length)) / tokens,
        rolled_back_tokens: total(name, (r) => r.stats.rolledBackTokens),
      };
    };
    const byLimit = (verify: VerifyMode) =>
      Object.fromEntries(
        DRAFT_LIMITS.map((limit) => {
          const { cloud_compute_relative_per_round: _, ...rest } = figures(variantName(verify, limit));
          return [limit, rest];
        }),
      );
    return {
      draftPolicyTarget: draftPolicy.targetAgreement,
      exact: figures(variantName("exact", defaultMaxDraftTokens("exact"))),
      rollback: figures(variantName("rollback", defaultMaxDraftTokens("rollback"))),
      byDraftLimit: { exact: byLimit("exact"), rollback: byLimit("rollback") },
    };
  } finally {
    await whole.release();
    await local.release();
  }
}

/** Over the emulated link: per-token latency of cloud-only, EXACT and ROLLBACK as a client sees them. */
async function overLink(ctx: Context, maxTokens: number) {
  const env = { TANDEM_LOG_LEVEL: "error" };
  const cloud = await cloudBehindLink(ctx.split, env);
  const link = cloud.link;
  const edge = await startProgram(
    "tandem-edge",
    {
      model: DEMO_MODEL,
      calibration: ctx.calibrationPath,
      draftTarget: DRAFT_TARGET,
      cloudAddress: link.address,
      codec: "fp16",
      port: 0,
      cloudDeadlineMs: 5000,
    },
    env,
  );
  const modes = {
    cloud_only: { mode: "MODE_CLOUD_ONLY" },
    exact: { verify: "VERIFY_EXACT" },
    rollback: { verify: "VERIFY_ROLLBACK" },
  } as const;
  const out: Record<
    string,
    { p50_token_latency_ms: number; mean_ms_per_token: number; agreement_with_cloud_only?: number }
  > = {};
  try {
    const reference: number[][] = [];
    for (const [name, fields] of Object.entries(modes)) {
      const gaps: number[] = [];
      let totalMs = 0;
      let tokens = 0;
      const agreements: number[] = [];
      for (const [i, prompt] of ctx.prompts.entries()) {
        const start = performance.now();
        let last = start;
        const result = await generate(
          edge.address,
          { text: ctx.tokenizer.decode(prompt), maxTokens, ...fields },
          () => {
            const now = performance.now();
            gaps.push(now - last);
            last = now;
          },
        );
        if (result.error) throw new Error(`generate failed: ${result.error.details}`);
        totalMs += last - start;
        tokens += result.standing.length;
        const ids = result.standing.map((t) => t.id);
        if (name === "cloud_only") reference.push(ids);
        else agreements.push(tokenAgreement(ids, reference[i]));
      }
      out[name] = {
        p50_token_latency_ms: percentile(gaps, 0.5),
        mean_ms_per_token: totalMs / tokens,
        agreement_with_cloud_only:
          agreements.length > 0 ? agreements.reduce((a, b) => a + b, 0) / agreements.length : undefined,
      };
    }
  } finally {
    await edge.kill();
    await cloud.close();
  }
  return out;
}

/** `exact` and `rollback` figures of one split, and cloud-only's latency on the same link. */
export async function verifiedDecoding(ctx: Context, maxTokens: number) {
  process.stderr.write(`collab bench: split ${ctx.split}: verified decoding in-process\n`);
  const local = await inProcess(ctx, maxTokens);
  process.stderr.write(`collab bench: split ${ctx.split}: verified decoding over the emulated link\n`);
  const link = await overLink(ctx, maxTokens);
  const row = (verify: "exact" | "rollback") => ({
    ...local[verify],
    p50_token_latency_ms: link[verify].p50_token_latency_ms,
    mean_ms_per_token: link[verify].mean_ms_per_token,
    agreement_with_cloud_only_over_link: link[verify].agreement_with_cloud_only,
    p50_latency_vs_cloud_only: link[verify].p50_token_latency_ms / link.cloud_only.p50_token_latency_ms,
    mean_latency_vs_cloud_only: link[verify].mean_ms_per_token / link.cloud_only.mean_ms_per_token,
  });
  return {
    // The calibrated target whose thresholds drafted: the nearest at or above DRAFT_TARGET.
    draft_policy_target: local.draftPolicyTarget,
    by_draft_limit: local.byDraftLimit,
    cloud_only: link.cloud_only,
    exact: row("exact"),
    rollback: row("rollback"),
  };
}
