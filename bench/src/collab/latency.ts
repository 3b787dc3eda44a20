/**
 * Latency and bytes of the collab benchmark, measured as a deployment sees them: a real
 * cloud-worker process behind the emulated link and a real edge-agent process per codec,
 * driven over their network API. Per-token latency (p50/p95, first token) for edge-only,
 * collaborative and cloud-only generation, and bytes on the wire from the agent's own
 * accounting.
 */
import { CODEC_NAMES, type CodecName } from "@tandem/runtime";
import { generate, startProgram } from "@tandem/testkit";
import { percentile } from "../statistics.ts";
import { DEMO_MODEL } from "../bench-paths.ts";
import { cloudBehindLink, type Context } from "./collab-context.ts";

/** Real processes: worker behind the emulated link, one edge agent per codec. */
export async function latencyAndBytes(ctx: Context, maxTokens: number, everyCodec: boolean) {
  const env = { TANDEM_LOG_LEVEL: "error" };
  const cloud = await cloudBehindLink(ctx.split, env);
  const link = cloud.link;
  const text = (prompt: number[]) => ctx.tokenizer.decode(prompt);
  const latency: Record<string, { p50: number; p95: number; first_token_ms: number }> = {};
  const bytes: Record<
    string,
    { per_generated_token: number; per_escalated_token: number; escalated_share: number }
  > = {};
  try {
    for (const codec of everyCodec && !ctx.smoke ? CODEC_NAMES : (["fp16"] as CodecName[])) {
      const edge = await startProgram(
        "tandem-edge",
        {
          model: DEMO_MODEL,
          calibration: ctx.calibrationPath,
          target: 0.99,
          cloudAddress: link.address,
          codec,
          port: 0,
          cloudDeadlineMs: 5000,
        },
        env,
      );
      try {
        const modes =
          codec === "fp16"
            ? (["MODE_EDGE_ONLY", "MODE_AUTO", "MODE_CLOUD_ONLY"] as const)
            : (["MODE_AUTO"] as const);
        for (const mode of modes) {
          const gaps: number[] = [];
          const firsts: number[] = [];
          let sent = 0;
          let generated = 0;
          let escalations = 0;
          for (const prompt of ctx.prompts) {
            const start = performance.now();
            let last = start;
            const result = await generate(edge.address, { text: text(prompt), maxTokens, mode }, (index) => {
              const now = performance.now();
              if (index === 0) firsts.push(now - start);
              else gaps.push(now - last);
              last = now;
            });
            if (result.error) throw new Error(`generate failed: ${result.error.details}`);
            sent += Number(result.summary!.bytesSent);
            generated += result.tokens.length;
            escalations += result.summary!.escalations;
          }
          const name =
            mode === "MODE_EDGE_ONLY" ? "edge_only" : mode === "MODE_AUTO" ? "collaborative" : "cloud_only";
          if (codec === "fp16")
            latency[name] = {
              p50: percentile(gaps, 0.5),
              p95: percentile(gaps, 0.95),
              first_token_ms: percentile(firsts, 0.5),
            };
          if (mode === "MODE_AUTO")
            bytes[codec] = {
              per_generated_token: sent / generated,
              per_escalated_token: sent / Math.max(1, escalations),
              escalated_share: escalations / generated,
            };
        }
      } finally {
        await edge.kill();
      }
    }
  } finally {
    await cloud.close();
  }
  return { latency, bytes };
}
