/**
 * `tandem bench api`: what the ecosystem's interfaces cost. On the demo model, real
 * processes over loopback (a cloud worker and an edge agent with its calibrated exits,
 * so tokens come from both):
 *
 *   - the same requests through the OpenAI-compatible HTTP API (SSE streaming) and
 *     through gRPC Generate, on one edge agent of their own: time to first token and the
 *     gap between tokens as the client sees them (median of each round's medians);
 *   - tokens/s of one generation after another with Prometheus metrics on (edge and
 *     worker) and with tracing on (edge and worker, spans exported over OTLP/HTTP to a
 *     local sink that discards them) against both off — the deployments run side by side
 *     and are measured in turns, prompt by prompt, so drift hits each alike; a second
 *     plain deployment, measured the same way, says how large a difference noise alone
 *     makes (`noise_overhead`).
 *
 * Overheads are the median over rounds of 1 − (tokens/s on ÷ the mean tokens/s of the two
 * plain deployments in the same round); negative means noise was larger.
 */
import { createServer, type Server } from "node:http";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createParser } from "eventsource-parser";
import { generate, startProgram, type RunningProcess } from "@tandem/testkit";
import type { Benchmark } from "./bench-types.ts";
import { DEMO_HELDOUT_TEXT, DEMO_MODEL } from "./bench-paths.ts";
import { median } from "./statistics.ts";

const SPLIT = 3;

interface Timed {
  firstTokenMs: number;
  /** Gaps between consecutive tokens' arrivals. */
  gapsMs: number[];
  tokens: number;
  totalMs: number;
}

interface Deployment {
  name: DeploymentName;
  worker: RunningProcess;
  edge: RunningProcess;
}

/** An OTLP/HTTP endpoint that takes every export and keeps nothing. */
async function startSpanSink(): Promise<{ url: string; server: Server; requests: () => number }> {
  let requests = 0;
  const server = createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      requests++;
      response.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, server, requests: () => requests };
}

async function startDeployment(
  name: DeploymentName,
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<Deployment> {
  const metrics: Record<string, string> = name === "metrics" ? { metricsAddress: "127.0.0.1:0" } : {};
  const worker = await startProgram(
    "tandem-cloud-worker",
    { model: DEMO_MODEL, split: SPLIT, port: 0, workerId: `api-${name}`, ...metrics },
    env,
  );
  const edge = await startProgram(
    "tandem-edge",
    {
      model: DEMO_MODEL,
      calibration: join(DEMO_MODEL, "calibration.safetensors"),
      cloudAddress: worker.address,
      codec: "fp16",
      port: 0,
      cloudDeadlineMs: 5000,
      ...metrics,
    },
    env,
  );
  log(`api: ${name} deployment: edge ${edge.address} (http ${edge.httpAddress}), worker ${worker.address}`);
  return { name, worker, edge };
}

async function viaGrpc(edge: RunningProcess, prompt: string, maxTokens: number): Promise<Timed> {
  const start = performance.now();
  let last = start;
  let firstTokenMs = 0;
  const gapsMs: number[] = [];
  const result = await generate(edge.address, { text: prompt, maxTokens }, (index) => {
    const now = performance.now();
    if (index === 0) firstTokenMs = now - start;
    else gapsMs.push(now - last);
    last = now;
  });
  if (result.error) throw new Error(`gRPC generate failed: ${result.error.details}`);
  return { firstTokenMs, gapsMs, tokens: result.tokens.length, totalMs: performance.now() - start };
}

async function viaHttp(edge: RunningProcess, prompt: string, maxTokens: number): Promise<Timed> {
  const start = performance.now();
  let last = start;
  let firstTokenMs = 0;
  let tokens = 0;
  const gapsMs: number[] = [];
  const response = await fetch(`http://${edge.httpAddress}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "tandem-demo", prompt, max_tokens: maxTokens, stream: true }),
  });
  if (response.status !== 200) throw new Error(`HTTP completion failed: ${await response.text()}`);
  const parser = createParser({
    onEvent(event) {
      if (event.data === "[DONE]") return;
      const chunk = JSON.parse(event.data) as { tandem?: { token_id?: number } };
      if (chunk.tandem?.token_id === undefined) return;
      const now = performance.now();
      if (tokens++ === 0) firstTokenMs = now - start;
      else gapsMs.push(now - last);
      last = now;
    },
  });
  const decoder = new TextDecoder();
  for await (const bytes of response.body!) parser.feed(decoder.decode(bytes, { stream: true }));
  return { firstTokenMs, gapsMs, tokens, totalMs: performance.now() - start };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * CPU time a process has used, user + system, in ms (Linux: /proc/<pid>/stat, in clock
 * ticks of 10 ms); undefined where there is no /proc. What a deployment spends per token
 * does not depend on which moment of the machine it ran in, as tokens/s does: the
 * overheads' steadier measure.
 */
function cpuMs(process: RunningProcess): number | undefined {
  const path = `/proc/${process.child.pid}/stat`;
  if (!existsSync(path)) return undefined;
  // Fields after the command name's closing parenthesis: utime and stime are the 12th and 13th.
  const fields = readFileSync(path, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CPU ms of a deployment's edge and worker together; undefined without /proc. */
function deploymentCpuMs(d: Deployment): number | undefined {
  const edge = cpuMs(d.edge);
  const worker = cpuMs(d.worker);
  return edge === undefined || worker === undefined ? undefined : edge + worker;
}

/** Deployments measured for throughput, side by side. */
const DEPLOYMENTS = ["plain", "plain_again", "metrics", "tracing"] as const;
/**
 * The HTTP-vs-gRPC latencies are measured on a deployment of their own: the requests
 * they make keep it warmer than the others, which would favour it in the throughput
 * comparison.
 */
type DeploymentName = (typeof DEPLOYMENTS)[number] | "latency";

const api: Benchmark<"api"> = async ({ smoke, options }) => {
  const log = (line: string) => process.stderr.write(line + "\n");
  const epochs = options.epochs ?? (smoke ? 1 : 3);
  const rounds = options.rounds ?? (smoke ? 1 : 5);
  const maxTokens = smoke ? 4 : 32;
  const promptCount = smoke ? 2 : 6;
  const lines = readFileSync(DEMO_HELDOUT_TEXT, "utf8")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 40);
  const prompts = Array.from({ length: promptCount }, (_, i) => lines[i * 17].slice(0, 60));

  const sink = await startSpanSink();
  const quiet = { TANDEM_LOG_LEVEL: "error" };
  // The SDK's defaults otherwise (a batch exported every 5 s, every trace sampled).
  const traced = {
    ...quiet,
    TANDEM_TRACING: "1",
    OTEL_TRACES_EXPORTER: "otlp",
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
    OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
  };
  const perRound = {
    http_ttft: [] as number[],
    grpc_ttft: [] as number[],
    http_gap: [] as number[],
    grpc_gap: [] as number[],
    tps: Object.fromEntries(DEPLOYMENTS.map((n) => [n, [] as number[]])) as Record<DeploymentName, number[]>,
  };
  /** CPU ms (edge + worker) and tokens per deployment, over every round. */
  const cpu = Object.fromEntries(DEPLOYMENTS.map((n) => [n, { ms: 0, tokens: 0 }])) as Record<
    DeploymentName,
    { ms: number; tokens: number }
  >;
  let cpuMeasured = true;
  let round = 0;
  // Each epoch starts every deployment afresh (in a rotating order): what one process's
  // placement and warm-up give it is then not all one deployment's.
  for (let epoch = 0; epoch < epochs; epoch++) {
    const deployments: Deployment[] = [];
    try {
      const order = DEPLOYMENTS.map((_, i) => DEPLOYMENTS[(i + epoch) % DEPLOYMENTS.length]);
      for (const name of order)
        deployments.push(await startDeployment(name, name === "tracing" ? traced : quiet, log));
      const latency = await startDeployment("latency", quiet, log);
      deployments.push(latency);
      const measured = deployments.filter((d) => d.name !== "latency");
      // Warm every path once: graph sessions, cloud links, JIT.
      for (const d of deployments) for (const prompt of prompts) await viaGrpc(d.edge, prompt, maxTokens);
      for (const prompt of prompts) await viaHttp(latency.edge, prompt, maxTokens);
      for (let r = 0; r < rounds; r++, round++) {
        const http: Timed[] = [];
        const grpc: Timed[] = [];
        for (const prompt of prompts) {
          // Alternate which API goes first, so neither always meets a warmer cache.
          if (round % 2 === 0) {
            http.push(await viaHttp(latency.edge, prompt, maxTokens));
            grpc.push(await viaGrpc(latency.edge, prompt, maxTokens));
          } else {
            grpc.push(await viaGrpc(latency.edge, prompt, maxTokens));
            http.push(await viaHttp(latency.edge, prompt, maxTokens));
          }
        }
        perRound.http_ttft.push(median(http.map((t) => t.firstTokenMs)));
        perRound.grpc_ttft.push(median(grpc.map((t) => t.firstTokenMs)));
        perRound.http_gap.push(median(http.flatMap((t) => t.gapsMs)));
        perRound.grpc_gap.push(median(grpc.flatMap((t) => t.gapsMs)));
        // Each prompt through every deployment in turn (the order rotating), so a slow
        // moment of the machine falls on all of them alike.
        const tokens = Object.fromEntries(DEPLOYMENTS.map((n) => [n, 0])) as Record<DeploymentName, number>;
        const ms = Object.fromEntries(DEPLOYMENTS.map((n) => [n, 0])) as Record<DeploymentName, number>;
        // Each deployment's CPU over the whole round, its idle turns included: what it does
        // between its own requests (a batch of spans exported, timers) is its cost too.
        const cpuBefore = measured.map(deploymentCpuMs);
        for (const [p, prompt] of prompts.entries()) {
          const shift = (round + p) % measured.length;
          for (const d of [...measured.slice(shift), ...measured.slice(0, shift)]) {
            const timed = await viaGrpc(d.edge, prompt, maxTokens);
            tokens[d.name as (typeof DEPLOYMENTS)[number]] += timed.tokens;
            ms[d.name as (typeof DEPLOYMENTS)[number]] += timed.totalMs;
          }
        }
        for (const name of DEPLOYMENTS) perRound.tps[name].push((tokens[name] / ms[name]) * 1000);
        measured.forEach((d, i) => {
          const before = cpuBefore[i];
          const after = deploymentCpuMs(d);
          const name = d.name as (typeof DEPLOYMENTS)[number];
          if (before === undefined || after === undefined) cpuMeasured = false;
          else {
            cpu[name].ms += after - before;
            cpu[name].tokens += tokens[name];
          }
        });
        log(
          `api: epoch ${epoch + 1}/${epochs} round ${r + 1}/${rounds}: ` +
            `ttft http ${perRound.http_ttft.at(-1)!.toFixed(2)} / grpc ${perRound.grpc_ttft.at(-1)!.toFixed(2)} ms, ` +
            `token gap http ${perRound.http_gap.at(-1)!.toFixed(2)} / grpc ${perRound.grpc_gap.at(-1)!.toFixed(2)} ms, ` +
            `tokens/s ${DEPLOYMENTS.map((n) => `${n} ${perRound.tps[n].at(-1)!.toFixed(0)}`).join(" ")}`,
        );
      }
    } finally {
      for (const d of deployments) {
        await d.edge.kill();
        await d.worker.kill();
      }
    }
  }
  sink.server.close();
  /**
   * Median over rounds of 1 − (tokens/s of `name` ÷ the two plain deployments' mean in the
   * same round): against the pair, one plain process's luck weighs half as much.
   */
  const baseline = perRound.tps.plain.map((tps, i) => (tps + perRound.tps.plain_again[i]) / 2);
  const overhead = (name: (typeof DEPLOYMENTS)[number]) =>
    round3(median(perRound.tps[name].map((tps, i) => 1 - tps / baseline[i])));
  /** CPU per token of each deployment, and `name`'s against the two plain deployments' mean. */
  const cpuPerToken = (name: (typeof DEPLOYMENTS)[number]) => (cpu[name].ms * 1000) / cpu[name].tokens;
  const plainCpu = (cpuPerToken("plain") + cpuPerToken("plain_again")) / 2;
  const cpuOverhead = (name: (typeof DEPLOYMENTS)[number]) => round3(cpuPerToken(name) / plainCpu - 1);
  /** The same of the second plain deployment against the first: what noise alone gives. */
  const noise = round3(median(perRound.tps.plain_again.map((tps, i) => 1 - tps / perRound.tps.plain[i])));
  return {
    name: "api",
    model: "tandem-demo",
    split: SPLIT,
    codec: "fp16",
    epochs,
    rounds_per_epoch: rounds,
    prompts: promptCount,
    max_tokens: maxTokens,
    http_ttft_ms: round3(median(perRound.http_ttft)),
    grpc_ttft_ms: round3(median(perRound.grpc_ttft)),
    http_token_ms_p50: round3(median(perRound.http_gap)),
    grpc_token_ms_p50: round3(median(perRound.grpc_gap)),
    http_minus_grpc_token_ms: round3(median(perRound.http_gap) - median(perRound.grpc_gap)),
    tokens_per_s: Object.fromEntries(DEPLOYMENTS.map((n) => [n, round3(median(perRound.tps[n]))])),
    metrics_overhead: overhead("metrics"),
    tracing_overhead: overhead("tracing"),
    // Two identical deployments measured the same way: how far apart noise alone puts them.
    noise_overhead: noise,
    span_exports_received: sink.requests(),
    // CPU time (edge + worker, user + system) per token over all rounds: steadier than
    // tokens/s, which moves with whatever else the machine does. Null without /proc.
    cpu_us_per_token: cpuMeasured
      ? Object.fromEntries(DEPLOYMENTS.map((n) => [n, Math.round(cpuPerToken(n))]))
      : null,
    metrics_cpu_overhead: cpuMeasured ? cpuOverhead("metrics") : null,
    tracing_cpu_overhead: cpuMeasured ? cpuOverhead("tracing") : null,
    noise_cpu_overhead: cpuMeasured ? round3(cpuPerToken("plain_again") / cpuPerToken("plain") - 1) : null,
  };
};

export default api;
