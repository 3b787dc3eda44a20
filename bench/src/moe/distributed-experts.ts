/**
 * The `moe` benchmark's distributed part: expert parallelism on three cloud workers (in
 * this process, each with its own gRPC servers, over loopback, joined to a nats-server of
 * the benchmark's own). w1 serves the session and holds no expert; w2 and w3 hold the
 * experts of a map planned by the control plane's planner from the routing the model
 * really performed in a warm-up. A greedy generation through w1 is compared, logit for
 * logit, with the single-graph upper segment; then one with w3 stopped part-way through
 * (its experts go to their other replica on w2, or are loaded by w1).
 *
 * Reported: the largest logit difference, expert-call payload bytes per generated token,
 * the live max/mean expert load over the hosts (rows each served) beside the plan's, and
 * whether the run with a host lost produced the same tokens within 1e-4 per logit.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { connect } from "@nats-io/transport-node";
import { clusterStatus, controlPlaneNames, openExpertMap } from "@tandem/cluster";
import { type CloudWorker, startCloudWorker } from "@tandem/cloud-worker";
import { planExperts } from "@tandem/control-plane";
import {
  type Checkpoint,
  SegmentModel,
  SegmentSessions,
  segmentSpec,
  cloudSegmentSpec,
} from "@tandem/runtime";
import { startNatsServer, until } from "@tandem/testkit";

const PROMPT = [3, 17, 99, 5, 42, 7, 11, 250, 31, 64, 2, 8, 150, 77, 21, 9];
/** The traffic the plan is made from: other text than the measured generation's. */
const PLANNING_PROMPT = [12, 400, 88, 6, 1000, 23, 57, 3, 710, 45, 19, 260, 91, 4, 333, 70];
const CLUSTER = `bench-moe-${process.pid}`;

export interface DistributedExpertsResult {
  workers: number;
  hosts: number;
  tokens: number;
  distributed_max_abs_logit_diff: number;
  /** Experts/Run payload bytes (rows sent + outputs received) per generated token. */
  expert_bytes_per_token: number;
  /** Share of expert runs made on another worker. */
  remote_expert_share: number;
  live_expert_load_max_mean: number;
  /** Rows each host ran for w1 in the measured generation: what the live load is made of. */
  host_rows: Record<string, number>;
  planned_expert_load_max_mean: number;
  host_loss_outputs_identical: boolean;
  host_loss_max_abs_logit_diff: number;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

export async function distributedExperts(
  modelDir: string,
  checkpoint: Checkpoint,
  split: number,
  tokens: number,
  log: (line: string) => void,
): Promise<DistributedExpertsResult> {
  const { numLayers, numExperts } = checkpoint.config;
  const ids = (numLayers - split) * numExperts!;
  const cacheDir = mkdtempSync(join(tmpdir(), "tandem-bench-ep-"));
  const nats = await startNatsServer();
  const silent = pino({ level: "silent" });
  const workers = new Map<string, CloudWorker>();
  const lower = new SegmentSessions(
    await SegmentModel.load(checkpoint, segmentSpec({ fromLayer: 0, toLayer: split, outputHidden: true }), {
      cacheDir,
    }),
  );
  const reference = new SegmentSessions(
    await SegmentModel.load(checkpoint, cloudSegmentSpec(split, numLayers, "fp32"), { cacheDir }),
  );
  try {
    for (const id of ["w1", "w2", "w3"])
      workers.set(
        id,
        await startCloudWorker(
          {
            modelDir,
            split,
            workerId: id,
            port: 0,
            cacheDir,
            expertParallel: { port: 0, codec: "fp32", handoverMs: 0 },
            cluster: { natsUrl: nats.url, name: CLUSTER, heartbeatMs: 200, drainTimeoutMs: 100 },
          },
          silent,
        ),
      );
    const w1 = workers.get("w1")!;

    /** Greedy generation: the reference's logits and w1's for each generated token. */
    const generate = async (session: string, prompt: number[], onStep?: (step: number) => Promise<void>) => {
      lower.open(session);
      reference.open(session);
      let position = 0;
      let next = prompt;
      const diffs: number[] = [];
      const produced: number[] = [];
      for (let step = 0; step < tokens; step++) {
        await onStep?.(step);
        const hidden = (await lower.forward(session, { ids: next })).hidden!;
        const expected = (await reference.forward(session, { hidden, count: next.length })).exits[0].logits!;
        const actual = (
          await w1.contexts.append(session, { start: position, hidden: hidden, count: next.length })
        ).exits[0].logits!;
        diffs.push(maxAbsDiff(actual, expected));
        position += next.length;
        const token = argmax(expected);
        if (argmax(actual) !== token) diffs.push(Infinity);
        produced.push(token);
        next = [token];
      }
      lower.release(session);
      reference.release(session);
      w1.contexts.release(session);
      return { maxDiff: Math.max(...diffs), produced };
    };

    // The routing the model performs on this text: what the planner places experts by.
    reference.model.takeExpertCounts();
    await generate("warm-up", PLANNING_PROMPT);
    const loads = reference.model.takeExpertCounts()!;
    // Each host has room for 60% of the experts: a fifth of them (the hot ones) get two replicas.
    const slots = Math.ceil(ids * 0.6);
    const plan = planExperts(loads, [
      { id: "w2", slots },
      { id: "w3", slots },
    ]);
    const names = controlPlaneNames(CLUSTER);
    const nc = await connect({ servers: nats.url });
    const endpoints = await until("the workers' node records", async () => {
      const status = await clusterStatus(nats.url, CLUSTER, 1000);
      const found = Object.fromEntries(
        status.nodes.filter((n) => n.expertEndpoint).map((n) => [n.id, n.expertEndpoint!]),
      );
      return Object.keys(found).length === 3 ? found : undefined;
    });
    const store = await openExpertMap(nc, names);
    await store.write(
      {
        version: 1,
        fencingToken: 0,
        epoch: "",
        experts: Object.fromEntries([...plan.placement].map(([e, w]) => [String(e), w])),
        shares: Object.fromEntries([...plan.shares].map(([e, s]) => [String(e), s])),
        endpoints,
        loads,
        maxMeanLoad: plan.maxMeanLoad,
        writtenAt: Date.now(),
      },
      undefined,
    );
    await nc.close();
    await until(
      "the workers to take up the map",
      () =>
        [...workers.values()].every((w) => w.membership?.expertAssignment()?.version === 1) &&
        workers.get("w1")!.experts!.parallelism.heldExperts().length === 0
          ? true
          : undefined,
      20_000,
    );
    log(`moe: expert map planned over w2, w3 (expected max/mean load ${plan.maxMeanLoad.toFixed(3)})`);

    const parallelism = w1.experts!.parallelism;
    const before = { ...parallelism.counters };
    const served = (id: string) => workers.get(id)!.experts!.served.rows;
    const servedBefore = { w2: served("w2"), w3: served("w3") };
    const split1 = await generate("measured", PROMPT);
    const sent = parallelism.counters.bytesSent - before.bytesSent;
    const received = parallelism.counters.bytesReceived - before.bytesReceived;
    const remote = parallelism.counters.remoteCalls - before.remoteCalls;
    const local = parallelism.counters.localRuns - before.localRuns;
    const hostRows = [served("w2") - servedBefore.w2, served("w3") - servedBefore.w3];
    const meanRows = (hostRows[0] + hostRows[1]) / 2;
    log(`moe: distributed generation, max |logit diff| ${split1.maxDiff}, ${remote} remote expert calls`);

    // A host lost part-way through: w3 stops serving (as a crash would, without a drain).
    const w3 = workers.get("w3")!;
    const lost = await generate("host-loss", PROMPT, async (step) => {
      if (step !== Math.floor(tokens / 3)) return;
      await Promise.all([w3.server.shutdown(0), w3.experts!.server.shutdown(0)]);
    });
    log(`moe: generation across a host loss, max |logit diff| ${lost.maxDiff}`);
    return {
      workers: 3,
      hosts: 2,
      tokens,
      distributed_max_abs_logit_diff: split1.maxDiff,
      expert_bytes_per_token: Math.round((sent + received) / tokens),
      remote_expert_share: Math.round((remote / Math.max(1, remote + local)) * 1000) / 1000,
      live_expert_load_max_mean: Math.round((Math.max(...hostRows) / meanRows) * 1000) / 1000,
      host_rows: { w2: hostRows[0], w3: hostRows[1] },
      planned_expert_load_max_mean: Math.round(plan.maxMeanLoad * 1000) / 1000,
      host_loss_outputs_identical: lost.maxDiff <= 1e-4,
      host_loss_max_abs_logit_diff: lost.maxDiff,
    };
  } finally {
    for (const worker of workers.values()) await worker.close(0).catch(() => undefined);
    await lower.model.release();
    await reference.model.release();
    await nats.stop();
    rmSync(cacheDir, { recursive: true, force: true });
  }
}
