/**
 * The faults the chaos benchmark injects while generations run, and one run of each: the
 * cluster settles, one clean generation shows the cloud path works, then a generation
 * starts and the fault is injected when a token chosen at random arrives; generations
 * go on back to back until `observeMs` after the fault; then the cluster is repaired for
 * the next run. Each fault says what it needs to know before the generation (the leader,
 * each worker's traffic so far), what it does at the token, and how it is repaired.
 */
import { TrafficSnapshot } from "./busy-worker.ts";
import { type GenerationMode, type GenerationRecord, timedGeneration } from "./generation-record.ts";
import type { LocalCluster } from "./local-cluster.ts";
import { mapsWritten, type PlacementObservation } from "./placement-observation.ts";
import { type Random, randomInt } from "../seeded-random.ts";
import { longestWait, type Reference, recoveryAfter, scoreGeneration } from "./scoring.ts";

export const GENERATION_FAULTS = ["worker_kill", "leader_kill", "nats_restart", "nats_server_kill"] as const;
export type GenerationFaultName = (typeof GENERATION_FAULTS)[number];

/** A fault, bound to one run on one cluster. */
interface Fault {
  /** Just before the generation the fault will hit. */
  prepare(): Promise<void>;
  /** At the chosen token; resolves, naming what it hit, once its own action is done. */
  inject(): Promise<string>;
  /** After the observation: the cluster back in its starting shape. */
  repair(): Promise<void>;
}

function faultOn(name: GenerationFaultName, cluster: LocalCluster, random: Random): Fault {
  switch (name) {
    case "worker_kill": {
      let traffic: TrafficSnapshot | undefined;
      let victim: string | undefined;
      return {
        prepare: async () => {
          traffic = new TrafficSnapshot(cluster.workerPids());
        },
        inject: async () => {
          const busiest = traffic!.busiest();
          victim = busiest.id;
          await cluster.killWorker(victim);
          return `${victim} (bytes read during the generation: ${JSON.stringify(busiest.bytes)})`;
        },
        repair: async () => {
          if (victim) await cluster.startWorker(victim);
        },
      };
    }
    case "leader_kill": {
      let leader: string | undefined;
      return {
        prepare: async () => {
          leader = await cluster.leader();
          if (!leader) throw new Error("no leader before the fault");
        },
        inject: async () => {
          await cluster.killReplica(leader!);
          return leader!;
        },
        repair: async () => {
          await cluster.startReplica();
        },
      };
    }
    case "nats_restart":
      return {
        prepare: async () => undefined,
        inject: async () => {
          await cluster.restartNats();
          return "the nats-server";
        },
        repair: async () => undefined,
      };
    case "nats_server_kill": {
      const index = randomInt(random, 0, cluster.natsServerCount - 1);
      return {
        prepare: async () => undefined,
        inject: async () => {
          await cluster.killNatsServer(index);
          return `NATS server ${index} of ${cluster.natsServerCount}`;
        },
        // The NATS cluster is the run's own: it is stopped with its cluster.
        repair: async () => undefined,
      };
    }
  }
}

export interface RunSettings {
  prompts: string[];
  references: Map<string, Reference>;
  tokens: number;
  mode: GenerationMode;
  observeMs: number;
  stallMs: number;
}

export interface RunOutcome {
  /** The token index whose arrival triggered the fault. */
  fault_token: number;
  target: string;
  generations: number;
  tokens: number;
  tokens_lost: number;
  tokens_repeated: number;
  different: boolean;
  generations_different: number;
  fallback_tokens: number;
  failed_generations: number;
  errors: string[];
  recovery_ms: number;
  recovered: boolean;
  /** The longest the client waited for its next event after the fault. */
  longest_wait_ms: number;
  /** Whether the lease holder at the end of the observation is another replica than before the fault. */
  leader_changed: boolean;
  /** Placement maps written from just before the fault's generation to the end of the observation. */
  placement_changes: number;
  /** Maps a watcher saw meanwhile that gave no shard to a worker running all along (a live worker declared dead). */
  maps_without_live_worker: number;
}

/** True when the generation is the prompt's uninterrupted output, every token from where the mode says. */
function isClean(record: GenerationRecord, reference: Reference, mode: GenerationMode): boolean {
  const score = scoreGeneration(reference, record, mode);
  return record.error === undefined && !score.different && score.fallback === 0 && score.repeated === 0;
}

/**
 * Waits until a generation through the edge is clean: after a repair the edge may still be
 * backing off a worker of the run before.
 */
async function cleanGeneration(
  cluster: LocalCluster,
  settings: RunSettings,
  prompt: string,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const record = await timedGeneration(cluster.edge.address, prompt, settings.tokens, settings.mode);
    if (isClean(record, settings.references.get(prompt)!, settings.mode)) return;
    if (Date.now() > deadline)
      throw new Error(
        `no clean generation within ${timeoutMs} ms before the fault (last: ${record.error ?? "different output"})`,
      );
    await new Promise((r) => setTimeout(r, 500));
  }
}

export async function runFault(
  name: GenerationFaultName,
  cluster: LocalCluster,
  settings: RunSettings,
  random: Random,
): Promise<RunOutcome> {
  const { prompts, references, tokens, mode } = settings;
  const fault = faultOn(name, cluster, random);
  await cluster.settled();
  let next = randomInt(random, 0, prompts.length - 1);
  const promptAfter = () => prompts[next++ % prompts.length];
  await cleanGeneration(cluster, settings, promptAfter());

  const prompt = promptAfter();
  // A token the uninterrupted output has, and not the last: the fault must land mid-generation.
  const faultToken = randomInt(random, 1, Math.max(1, references.get(prompt)!.ids.length - 2));
  let faultAt = 0;
  let injected: Promise<string> | undefined;
  const inject = () => {
    faultAt = performance.now();
    injected = fault.inject();
    injected.catch(() => undefined); // awaited below
  };
  const leaderBefore = await cluster.leader();
  const stopObserving = await cluster.observePlacement();
  const records: GenerationRecord[] = [];
  let target: string;
  let placement: PlacementObservation;
  try {
    await fault.prepare();
    records.push(
      await timedGeneration(cluster.edge.address, prompt, tokens, mode, (index) => {
        if (index === faultToken && !injected) inject();
      }),
    );
    // A generation that ended before its fault token (it failed): the fault comes now.
    if (!injected) inject();
    while (performance.now() - faultAt < settings.observeMs)
      records.push(await timedGeneration(cluster.edge.address, promptAfter(), tokens, mode));
    target = await injected!;
  } finally {
    placement = await stopObserving();
  }
  // Running now, at the end of the observation, and so all through it (a killed worker is gone).
  const live = [...cluster.workers.keys()];
  const leaderAfter = await cluster.leader().catch(() => undefined);
  await fault.repair();

  const scores = records.map((record) => scoreGeneration(references.get(record.prompt)!, record, mode));
  const recovery = recoveryAfter(records, faultAt, mode, settings.stallMs);
  const errors = [...new Set(records.flatMap((r) => (r.error ? [r.error] : [])))];
  return {
    fault_token: faultToken,
    target,
    generations: records.length,
    tokens: records.reduce((sum, r) => sum + r.tokens.length, 0),
    tokens_lost: scores.reduce((sum, s) => sum + s.lost, 0),
    tokens_repeated: scores.reduce((sum, s) => sum + s.repeated, 0),
    different: scores.some((s) => s.different),
    generations_different: scores.filter((s) => s.different).length,
    fallback_tokens: scores.reduce((sum, s) => sum + s.fallback, 0),
    failed_generations: records.filter((r) => r.error !== undefined).length,
    errors: errors.slice(0, 3),
    recovery_ms: Math.round(recovery.ms),
    recovered: recovery.recovered,
    longest_wait_ms: Math.round(longestWait(records, faultAt)),
    // A lease nobody holds (expired, or unreadable) is no change of leader.
    leader_changed: leaderAfter !== undefined && leaderAfter !== leaderBefore,
    placement_changes: mapsWritten(placement),
    maps_without_live_worker: placement.maps.filter((map) => live.some((id) => !map.owners.has(id))).length,
  };
}

/** The uninterrupted output of each prompt, through the cluster; refused unless two runs agree and are clean. */
export async function referenceOutputs(
  cluster: LocalCluster,
  prompts: string[],
  tokens: number,
  mode: GenerationMode,
): Promise<Map<string, Reference>> {
  const references = new Map<string, Reference>();
  for (const prompt of prompts) {
    const [first, second] = [
      await timedGeneration(cluster.edge.address, prompt, tokens, mode),
      await timedGeneration(cluster.edge.address, prompt, tokens, mode),
    ];
    const reference = {
      ids: first.tokens.map((t) => t.id),
      positions: first.tokens.map((t) => t.position),
    };
    if (!isClean(first, reference, mode) || !isClean(second, reference, mode))
      throw new Error(
        `the uninterrupted runs of ${JSON.stringify(prompt)} are not clean and equal: ` +
          `${first.error ?? ""} ${second.error ?? ""}`.trim(),
      );
    references.set(prompt, reference);
  }
  return references;
}
